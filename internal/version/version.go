// Package version identifies this build of banger. Both binaries are built
// with the same -ldflags so the CLI can tell when the daemon is stale.
package version

import (
	"fmt"
	"os"
	"runtime/debug"
)

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

// ExecutableID identifies the binary file at path as built: its size and
// modification time, so a rebuilt binary gets a new id even when its
// version string is the same (a dirty tree). The daemon reports its own at
// start; the CLI compares it with the file now at that path to spot a stale
// daemon. It is "" when path cannot be read.
func ExecutableID(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d-%d", st.Size(), st.ModTime().UnixNano())
}
