// Package testhost holds what tests share about the host they run on: a
// skip that CI does not accept, and a way to run a package's tests again
// as an ordinary user with subordinate ids (the rootless paths).
//
// A test that cannot run on this host (a tool, file or privilege is
// missing) calls Skip, SkipUnless, NeedRoot or NeedTools: on a developer's
// machine it skips and says what is missing; under CI=true it fails. Only
// what no CI machine here can have, a real Firecracker or a KVM that runs
// guests, skips under CI too: SkipHardware.
package testhost

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerhq/banger/internal/subid"
)

// Skip skips t, saying what is missing; under CI=true it fails t instead:
// CI provides every host requirement, so a skip there would hide a test
// that did not run.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI=true: %s", msg)
	}
	t.Skip(msg)
}

// SubIDs are the subordinate ids of the user running the test (what a
// daemon of that user gives its build sandboxes); it skips (Skip) when the
// user has none.
func SubIDs(t testing.TB) subid.IDs {
	t.Helper()
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	ids, err := subid.Lookup(subid.System, name, os.Getuid())
	if err != nil {
		Skip(t, "build sandboxes need subordinate ids: %v", err)
	}
	return ids
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

// RootlessUser returns the ordinary user to run rootless tests as: the one
// BANGER_TEST_ROOTLESS_USER names, else the first user other than root
// that /etc/subuid lists (CI makes banger-ci). It skips (Skip) when there
// is none.
func RootlessUser(t testing.TB) *user.User {
	t.Helper()
	name := os.Getenv("BANGER_TEST_ROOTLESS_USER")
	if name == "" {
		b, _ := os.ReadFile("/etc/subuid")
		for _, l := range strings.Split(string(b), "\n") {
			if n, _, ok := strings.Cut(l, ":"); ok && n != "root" && n != "" {
				if _, err := user.Lookup(n); err == nil {
					name = n
					break
				}
			}
		}
	}
	if name == "" {
		Skip(t, "no ordinary user with /etc/subuid ranges to run as (useradd -m banger-ci makes one; or set BANGER_TEST_ROOTLESS_USER)")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	return u
}

// RunAsRootless runs the tests named in tests (exact names) of the current
// test binary again, as RootlessUser (with the BANGER_TEST_* variables of
// this process's environment), in a working folder of that user's,
// and fails t unless each passed there. It must be called as root. It
// returns the working folder (removed when t ends; files the rootless run
// left to subordinate ids are removed as root).
func RunAsRootless(t *testing.T, tests ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("already rootless: the tests themselves cover this user")
	}
	u := RootlessUser(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "banger-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	// The test binary must be readable by the user.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if out, err := exec.Command("cp", self, bin).CombinedOutput(); err != nil {
		t.Fatalf("copy test binary: %v: %s", err, out)
	}
	os.Chmod(bin, 0o755)
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	os.Chown(work, uid, gid)
	cmd := exec.Command(bin, "-test.run", "^("+strings.Join(tests, "|")+")$", "-test.v", "-test.count=1")
	cmd.Dir = work
	cmd.Env = []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "TMPDIR=" + work,
		"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin", "CI=" + os.Getenv("CI")}
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "BANGER_TEST_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	t.Logf("as %s (uid %d):\n%s", u.Username, uid, out)
	if err != nil {
		t.Fatalf("rootless run failed: %v", err)
	}
	for _, name := range tests {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("rootless run: %s did not pass (skipped?)", name)
		}
	}
	return work
}

// Attacker builds internal/testhost/attacker (see there), static, into a
// folder everyone may read, once per test process (BANGER_TEST_ATTACKER
// names it, for the rootless re-runs), and returns its path. repo is the
// repository root.
func Attacker(t testing.TB, repo string) string {
	t.Helper()
	if p := os.Getenv("BANGER_TEST_ATTACKER"); p != "" {
		return p
	}
	dir, err := os.MkdirTemp("", "banger-attacker-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "attacker")
	cmd := exec.Command("go", "build", "-o", bin, "./internal/testhost/attacker")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, out)
	}
	os.Setenv("BANGER_TEST_ATTACKER", bin)
	t.Cleanup(func() {
		os.Unsetenv("BANGER_TEST_ATTACKER")
		os.RemoveAll(dir)
	})
	return bin
}

// PrivateBanger points every XDG directory and the runtime bundle
// ($BANGER_RUNTIME_DIR, an empty folder) at fresh temporary folders for
// the rest of t, and clears $BANGER_ACCEL: code under test sees a private
// banger with nothing in it. It returns the root of those folders and the
// bundle folder.
func PrivateBanger(t testing.TB) (root, runtimeDir string) {
	t.Helper()
	root = t.TempDir()
	for _, v := range []string{"XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"} {
		t.Setenv(v, filepath.Join(root, strings.ToLower(v)))
	}
	t.Setenv("BANGER_ACCEL", "")
	runtimeDir = filepath.Join(root, "runtime")
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_RUNTIME_DIR", runtimeDir)
	return root, runtimeDir
}
