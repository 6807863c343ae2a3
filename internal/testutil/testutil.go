// Package testutil holds what banger's tests share: skips that become
// failures in CI.
//
// A test that cannot run on this host (a tool, file or privilege is
// missing) calls Skip, SkipUnless, NeedRoot or NeedTools: on a developer's
// machine it skips and says what is missing; under CI=true it fails, so a
// CI machine that lacks something cannot pass by skipping. Only what no CI
// machine here can have, a real Firecracker or a KVM that runs guests,
// skips under CI too: SkipHardware.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true, as CI services set).
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips t, saying why, or fails it under CI=true.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("cannot run here, and CI=true makes that a failure: %s", why)
	}
	t.Skip(why)
}

// SkipUnless is Skip when cond is false.
func SkipUnless(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		Skip(t, format, args...)
	}
}

// SkipHardware skips t, also under CI: only for tests that need a real
// Firecracker or a KVM that runs guests, which no CI machine here has.
func SkipHardware(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skipf(format, args...)
}

// NeedRoot skips t (fails it under CI) unless it runs as root; why says
// what needs root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	SkipUnless(t, os.Geteuid() == 0, "needs root: %s", why)
}

// sbinDirs are searched after $PATH: an ordinary user's $PATH often lacks
// them, and e2fsprogs lives there.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// LookTool finds an executable named name in $PATH or the sbin folders.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or %s", name, strings.Join(sbinDirs, ", "))
}

// NeedTools skips t (fails it under CI) unless every tool is installed,
// naming all that are missing (`make deps` installs them), and returns
// their paths by name.
func NeedTools(t testing.TB, tools ...string) map[string]string {
	t.Helper()
	found := make(map[string]string, len(tools))
	var missing []string
	for _, name := range tools {
		p, err := LookTool(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		found[name] = p
	}
	if len(missing) > 0 {
		Skip(t, "needs %s (make deps installs the tools banger needs)", strings.Join(missing, ", "))
	}
	return found
}
