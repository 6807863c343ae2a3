package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// repoFile is a path relative to the repository root.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testModules returns a modules dir and its kernel release: the runtime's,
// when scripts/make-runtime.sh has built one, else a stand-in tree.
func testModules(t *testing.T) (dir, release string) {
	t.Helper()
	dir = os.Getenv("BANGER_TEST_MODULES_DIR")
	if dir == "" {
		dir = repoFile(t, "runtime/kernel/modules")
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "lib", "modules")); err == nil && len(ents) == 1 {
		return dir, ents[0].Name()
	}
	t.Logf("no runtime kernel modules at %s (scripts/make-runtime.sh): using a stand-in tree", dir)
	// The hook may run as a subordinate uid: keep it world-readable.
	dir, err := os.MkdirTemp("", "banger-test-modules-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	release = "0.0.0-banger-test"
	mod := filepath.Join(dir, "lib", "modules", release)
	if err := os.MkdirAll(filepath.Join(mod, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "modules.dep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, release
}

func requireDebianBuild(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: builds a Debian image from the network (not in -short mode)")
	}
	if err := CheckDebianTools(); err != nil {
		testhost.Skip(t, "skipping: %v", err)
	}
	requireTools(t, toolDebugfs)
}

func testMirror() string {
	if m := os.Getenv("BANGER_TEST_MIRROR"); m != "" {
		return m
	}
	return DefaultMirror
}

func TestBuildDebian(t *testing.T) {
	requireDebianBuild(t)
	modules, release := testModules(t)
	outDir := t.TempDir()
	tmpDir := t.TempDir()
	out := filepath.Join(outDir, "bookworm.ext4")
	const pubkey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvR0JpFGmGZ0jz8wMlbWZ0hmLVK9C0sbVm3a0l4L6gO banger-test"

	var log bytes.Buffer
	start := time.Now()
	err := BuildDebian(context.Background(), DebianOptions{
		Release: "bookworm",
		Mirror:  testMirror(),
		RootfsOptions: RootfsOptions{
			Output:     out,
			Scripts:    repoFile(t, "scripts"),
			IDs:        testhost.SubIDs(t),
			ModulesDir: modules,
			SSHPubKey:  pubkey,
			Log:        &log,
			TempDir:    tmpDir,
		},
	})
	if err != nil {
		t.Fatalf("BuildDebian: %v\nlog:\n%s", err, log.String())
	}
	t.Logf("built in %s", time.Since(start).Round(time.Second))
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.HasPrefix(l, "image: ") {
			t.Log(l)
		}
	}

	apparent, allocated, err := Size(out)
	if err != nil {
		t.Fatal(err)
	}
	if apparent%(64<<20) != 0 || allocated >= apparent {
		t.Errorf("image is %d bytes, %d allocated: want a sparse multiple of 64 MiB", apparent, allocated)
	}
	if names := dirNames(t, tmpDir); len(names) != 0 {
		t.Errorf("temporary files left in TempDir: %v", names)
	}
	if names := dirNames(t, outDir); len(names) != 1 {
		t.Errorf("output folder holds %v, want only the image", names)
	}
	if dump := mustRun(t, "dumpe2fs", "-h", out); !strings.Contains(dump, "Filesystem volume name:   banger-root") {
		t.Error("image is not labelled banger-root")
	}
	fsck(t, out)

	stats := []struct {
		path, typ, mode, uid, gid string
	}{
		{"/etc/shadow", "regular", "0640", "0", "42"},
		{"/usr/bin/passwd", "regular", "4755", "0", "0"},
		{"/dev/null", "character special", "0666", "0", "0"},
		{"/root/.ssh", "directory", "0700", "0", "0"},
		{"/root/.ssh/authorized_keys", "regular", "0600", "0", "0"},
		{"/usr/lib/modules/" + release, "directory", "0755", "0", "0"},
		{"/usr/lib/modules/" + release + "/modules.dep.bin", "regular", "0644", "0", "0"},
		{"/usr/local/sbin/banger-net", "regular", "0755", "0", "0"},
		{"/etc/systemd/system/banger-net.service", "regular", "0644", "0", "0"},
		{"/etc/systemd/system/multi-user.target.wants/banger-net.service", "symlink", "0777", "0", "0"},
		{"/etc/systemd/system/multi-user.target.wants/ssh.service", "symlink", "0777", "0", "0"},
		{"/etc/systemd/system/multi-user.target.wants/banger-ssh-keygen.service", "symlink", "0777", "0", "0"},
		{"/etc/machine-id", "regular", "0644", "0", "0"},
	}
	for _, s := range stats {
		typ, mode, uid, gid := statFields(t, debugfsStat(t, out, s.path))
		if typ != s.typ || mode != s.mode || uid != s.uid || gid != s.gid {
			t.Errorf("%s: %s %s %s:%s, want %s %s %s:%s", s.path, typ, mode, uid, gid, s.typ, s.mode, s.uid, s.gid)
		}
	}
	if got := string(debugfsCat(t, out, "/root/.ssh/authorized_keys")); got != pubkey+"\n" {
		t.Errorf("authorized_keys = %q, want the key once", got)
	}
	if got := debugfsCat(t, out, "/etc/machine-id"); len(got) != 0 {
		t.Errorf("machine-id is %q, want empty", got)
	}
	if got := string(debugfsCat(t, out, "/etc/fstab")); !strings.Contains(got, "/dev/vda") {
		t.Errorf("fstab does not mount /dev/vda:\n%s", got)
	}
	if got := string(debugfsCat(t, out, "/etc/resolv.conf")); regexp.MustCompile(`(?m)^\s*nameserver`).MatchString(got) {
		t.Errorf("resolv.conf carries a nameserver from the build host:\n%s", got)
	}
	if got := string(debugfsCat(t, out, "/etc/hosts")); !strings.Contains(got, "localhost") {
		t.Errorf("/etc/hosts has no localhost:\n%s", got)
	}
	ls := mustRun(t, "debugfs", "-R", "ls /etc/ssh", out)
	if strings.Contains(ls, "ssh_host_") {
		t.Errorf("image has SSH host keys:\n%s", ls)
	}
	// Extended attributes survive (the sandbox sets them, mkfs.ext4 -d
	// copies them): systemd gives the journal folder POSIX ACLs.
	if got := mustRun(t, "debugfs", "-R", "ea_list /var/log/journal", out); !strings.Contains(got, "system.posix_acl_access") {
		t.Errorf("/var/log/journal lost its ACL:\n%s", got)
	}
	// Units that would make a microVM wait at boot are masked.
	for _, u := range []string{"systemd-networkd-wait-online.service", "systemd-firstboot.service", "networking.service"} {
		if got := string(debugfsCat(t, out, "/etc/systemd/system/"+u)); got != "" {
			t.Errorf("%s: unexpected content %q", u, got)
		}
		st := debugfsStat(t, out, "/etc/systemd/system/"+u)
		if !strings.Contains(st, "Fast link dest: \"/dev/null\"") {
			t.Errorf("%s is not masked:\n%s", u, st)
		}
	}
}

// TestBuildDebianCancel cancels a build while mmdebstrap runs: the error says
// so and nothing is left behind.
func TestBuildDebianCancel(t *testing.T) {
	requireDebianBuild(t)
	outDir := t.TempDir()
	tmpDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	start := time.Now()
	err := BuildDebian(ctx, DebianOptions{
		Release: "bookworm",
		Mirror:  testMirror(),
		RootfsOptions: RootfsOptions{
			Output:  filepath.Join(outDir, "x.ext4"),
			Scripts: repoFile(t, "scripts"),
			IDs:     testhost.SubIDs(t),
			TempDir: tmpDir,
		},
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BuildDebian = %v, want a deadline error", err)
	}
	t.Logf("cancelled build returned after %s: %v", time.Since(start).Round(100*time.Millisecond), err)
	if names := dirNames(t, tmpDir); len(names) != 0 {
		t.Errorf("temporary files left in TempDir: %v", names)
	}
	if names := dirNames(t, outDir); len(names) != 0 {
		t.Errorf("files left in the output folder: %v", names)
	}
	if out, _ := exec.Command("pgrep", "-f", "mmdebstrap.*"+tmpDir).CombinedOutput(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("mmdebstrap processes still running: %s", out)
	}
}

func TestBuildDebianMissingScript(t *testing.T) {
	err := BuildDebian(context.Background(), DebianOptions{
		Release:       "bookworm",
		RootfsOptions: RootfsOptions{Output: filepath.Join(t.TempDir(), "x.ext4"), Scripts: t.TempDir()},
	})
	if err == nil || !strings.Contains(err.Error(), "customize script") {
		t.Fatalf("BuildDebian with a missing script = %v", err)
	}
}

func TestDebianOptionsValidation(t *testing.T) {
	script := repoFile(t, "scripts")
	dir := t.TempDir()
	tests := []struct {
		name string
		opts DebianOptions
		want string
	}{
		{"no release", DebianOptions{RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x"), Scripts: script}}, "no release"},
		{"no output", DebianOptions{Release: "bookworm", RootfsOptions: RootfsOptions{Scripts: script}}, "no output"},
		{"release banger does not build", DebianOptions{Release: "bullseye", RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x"), Scripts: script}},
			"banger builds and tests bookworm (12) and trixie (13)"},
		{"no script", DebianOptions{Release: "bookworm", RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x")}}, "no scripts folder"},
		{"bad package", DebianOptions{Release: "bookworm", Packages: []string{"vim,curl"},
			RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x"), Scripts: script}}, "not a Debian package name"},
		{"two-line key", DebianOptions{Release: "bookworm", RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x"), Scripts: script,
			SSHPubKey: "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b"}}, "single line"},
		{"missing output folder", DebianOptions{Release: "bookworm", RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "nope", "x"),
			Scripts: script}}, "does not exist"},
		{"bad modules dir", DebianOptions{Release: "bookworm", RootfsOptions: RootfsOptions{Output: filepath.Join(dir, "x"), Scripts: script,
			ModulesDir: dir}}, "no lib/modules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.fill()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("fill() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
