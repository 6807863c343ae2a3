package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rootfsTar writes a small root file system exercising what BuildRootfs must
// keep: owners, a setuid file, a symlink, a hard link, device nodes (one
// hard-linked), a FIFO and extended attributes.
func rootfsTar(t *testing.T) func(context.Context, io.Writer) error {
	t.Helper()
	mt := time.Unix(1700000000, 0)
	entries := []struct {
		hdr  tar.Header
		body string
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "home/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "home/alice/", Mode: 0o700, Uid: 1000, Gid: 1000}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "home/alice/notes", Mode: 0o640, Uid: 1000, Gid: 1000}, "hello\n"},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, "root:x:0:0::/root:/bin/sh\n"},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/su", Mode: 0o4755}, "#!/bin/true\n"},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin"}, ""},
		{tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/su2", Linkname: "usr/bin/su"}, ""},
		{tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
		{tar.Header{Typeflag: tar.TypeLink, Name: "dev/null2", Linkname: "dev/null"}, ""},
		{tar.Header{Typeflag: tar.TypeBlock, Name: "dev/vdb", Mode: 0o660, Gid: 6, Devmajor: 254, Devminor: 16}, ""},
		{tar.Header{Typeflag: tar.TypeFifo, Name: "home/alice/pipe", Mode: 0o600, Uid: 1000, Gid: 1000}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/ping", Mode: 0o755, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.banger":         "kept",
		}}, "ping\n"},
	}
	return func(_ context.Context, w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, e := range entries {
			h := e.hdr
			h.ModTime = mt
			h.Size = int64(len(e.body))
			h.Format = tar.FormatPAX
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, e.body); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

func needRootfsTools(t *testing.T) {
	t.Helper()
	if err := CheckRootfsTools(); err != nil {
		t.Skipf("missing tools: %v", err)
	}
	if os.Geteuid() != 0 {
		// Rootless builds map the user's subordinate ids.
		if out, err := exec.Command("unshare", "--user", "--map-root-user", "--map-auto", "true").CombinedOutput(); err != nil {
			t.Skipf("rootless BuildRootfs needs /etc/subuid and /etc/subgid ranges for this user: unshare --map-auto: %v: %s", err, out)
		}
	}
}

func debugfsOut(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	return string(out)
}

func TestBuildRootfsKeepsOwnersDevicesAndXattrs(t *testing.T) {
	needRootfsTools(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "customize.sh")
	// A stand-in for scripts/customize.sh (tested on its own): it proves the
	// script ran in the tree with the environment, and that /proc and /dev
	// were mounted for it.
	os.WriteFile(script, []byte(`set -e
[ -r "$1/proc/self/status" ] || { echo "no /proc in the tree" >&2; exit 1; }
[ -c "$1/dev/zero" ] || { echo "no /dev in the tree" >&2; exit 1; }
echo "$BANGER_SSH_PUBKEY" > "$1/etc/customized"
echo "customize: done" >&2
`), 0o755)
	out := filepath.Join(dir, "out.ext4")
	var phases []string
	var log bytes.Buffer
	err := BuildRootfs(context.Background(), RootfsOptions{
		Tar: rootfsTar(t), Output: out, CustomizeScript: script, SSHPubKey: "ssh-ed25519 AAAA test",
		TempDir: dir, Log: &log, Phase: func(p, _ string) { phases = append(phases, p) },
	})
	if err != nil {
		t.Fatalf("BuildRootfs: %v\n%s", err, log.String())
	}
	if got := strings.Join(phases, ","); got != "extract,customize,mkfs,finish" {
		t.Errorf("phases = %s", got)
	}
	if e, _ := filepath.Glob(filepath.Join(dir, "banger-rootfs-*")); len(e) != 0 {
		t.Errorf("temporary tree left behind: %v", e)
	}
	if fsck, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, fsck)
	}
	checks := map[string][]string{
		"stat /home/alice/notes": {"User:  1000", "Group:  1000", "Mode:  0640"},
		"stat /usr/bin/su":       {"Mode:  04755", "Links: 2"},
		"stat /dev/null":         {"Type: character special", "Mode:  0666", "Device major/minor number: 01:03"},
		"stat /dev/null2":        {"Type: character special", "Device major/minor number: 01:03"},
		"stat /dev/vdb":          {"Type: block special", "Group:     6", "Mode:  0660"},
		"stat /home/alice/pipe":  {"Type: FIFO", "User:  1000", "Mode:  0600"},
		"stat /bin":              {"Type: symlink", `Fast link dest: "usr/bin"`},
		"ea_list /usr/bin/ping":  {"user.banger (4) = \"kept\"", "security.capability (20)"},
		"cat /etc/customized":    {"ssh-ed25519 AAAA test"},
	}
	for req, wants := range checks {
		got := debugfsOut(t, out, req)
		for _, w := range wants {
			if !strings.Contains(strings.Join(strings.Fields(got), " "), strings.Join(strings.Fields(w), " ")) {
				t.Errorf("debugfs %q lacks %q:\n%s", req, w, got)
			}
		}
	}
	if !strings.Contains(log.String(), "customize: done") {
		t.Errorf("the script's output is not in the log:\n%s", log.String())
	}
}

func TestBuildRootfsFailureLeavesNothing(t *testing.T) {
	needRootfsTools(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "customize.sh")
	os.WriteFile(script, []byte("echo 'customize: error: this image is hopeless' >&2; exit 3\n"), 0o755)
	out := filepath.Join(dir, "images", "out.ext4")
	os.MkdirAll(filepath.Dir(out), 0o755)
	err := BuildRootfs(context.Background(), RootfsOptions{Tar: rootfsTar(t), Output: out, CustomizeScript: script, TempDir: dir})
	if err == nil || !strings.Contains(err.Error(), "this image is hopeless") {
		t.Fatalf("err = %v, want the script's message", err)
	}
	assertOnly(t, dir, "customize.sh", "images")
	assertOnly(t, filepath.Dir(out))

	// A stream that fails half-way, and a cancelled build.
	boom := errors.New("registry went away")
	bad := func(ctx context.Context, w io.Writer) error {
		if err := rootfsTar(t)(ctx, io.Discard); err != nil {
			return err
		}
		w.Write(make([]byte, 1024))
		return boom
	}
	os.WriteFile(script, []byte("true\n"), 0o755)
	if err := BuildRootfs(context.Background(), RootfsOptions{Tar: bad, Output: out, CustomizeScript: script, TempDir: dir}); !errors.Is(err, boom) {
		t.Fatalf("a failing stream: err = %v, want the stream's error", err)
	}
	assertOnly(t, dir, "customize.sh", "images")
	assertOnly(t, filepath.Dir(out))

	os.WriteFile(script, []byte("sleep 30\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := BuildRootfs(ctx, RootfsOptions{Tar: rootfsTar(t), Output: out, CustomizeScript: script, TempDir: dir}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled build: err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancellation took %s", d)
	}
	assertOnly(t, dir, "customize.sh", "images")
	assertOnly(t, filepath.Dir(out))
	if out, _ := exec.Command("pgrep", "-f", "sleep 30").Output(); len(out) > 0 {
		t.Errorf("the script's process survived the cancellation: %s", out)
	}
}

// assertOnly fails unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

// TestBuildRootfsRootless runs the BuildRootfs tests again as an ordinary
// user with subordinate ids (a per-user daemon builds images that way): the
// user namespace path, not only the root one. Run as root, it picks the user
// named by BANGER_TEST_ROOTLESS_USER, or the first one /etc/subuid lists
// (.ci/run makes one).
func TestBuildRootfsRootless(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already rootless: the other BuildRootfs tests cover this user")
	}
	needRootfsTools(t)
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
		t.Skip("no ordinary user with /etc/subuid ranges to build as (useradd -m banger-ci makes one; or set BANGER_TEST_ROOTLESS_USER)")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The test binary must be readable by the user.
	dir, err := os.MkdirTemp("", "banger-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "image.test")
	if out, err := exec.Command("cp", self, bin).CombinedOutput(); err != nil {
		t.Fatalf("copy test binary: %v: %s", err, out)
	}
	os.Chmod(bin, 0o755)
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	os.Chown(work, uid, gid)
	cmd := exec.Command(bin, "-test.run", "^TestBuildRootfs(KeepsOwnersDevicesAndXattrs|FailureLeavesNothing)$", "-test.v", "-test.count=1")
	cmd.Dir = work
	cmd.Env = []string{"HOME=" + u.HomeDir, "USER=" + name, "TMPDIR=" + work, "PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	t.Logf("as %s (uid %d):\n%s", name, uid, out)
	if err != nil {
		t.Fatalf("rootless BuildRootfs tests failed: %v", err)
	}
	for _, want := range []string{"--- PASS: TestBuildRootfsKeepsOwnersDevicesAndXattrs", "--- PASS: TestBuildRootfsFailureLeavesNothing"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rootless run lacks %q (skipped?)", want)
		}
	}
}
