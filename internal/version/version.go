// Package version identifies this build of banger. Both binaries are built
// with the same -ldflags so the CLI can tell when the daemon is stale.
package version

import "runtime/debug"

// Version is set at build time with
// -ldflags "-X github.com/bangerhq/banger/internal/version.Version=...".
var Version = "dev"

// String returns the version, falling back to the VCS revision Go embeds.
func String() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return "dev-" + rev + dirty
		}
	}
	return Version
}
