package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/testhost"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// tarEntry is one entry of a test stream.
type tarEntry struct {
	hdr  tar.Header
	body string
}

// rawEntry as an entry's Typeflag: its body is written as it is (blocks
// archive/tar cannot make).
const rawEntry = 'R'

// writeTar returns a Tar function writing entries.
func writeTar(entries []tarEntry) func(context.Context, io.Writer) error {
	mt := time.Unix(1700000000, 0)
	return func(_ context.Context, w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, e := range entries {
			if e.hdr.Typeflag == rawEntry {
				if err := tw.Flush(); err != nil {
					return err
				}
				if _, err := io.WriteString(w, e.body); err != nil {
					return err
				}
				continue
			}
			h := e.hdr
			if h.ModTime.IsZero() {
				h.ModTime = mt
			}
			if h.Typeflag == tar.TypeReg && h.Size == 0 {
				h.Size = int64(len(e.body))
			}
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

// baseEntries are a minimal root file system: /etc and a static busybox
// (from the host) as /bin/sh, for the image's own shell.
func baseEntries(t *testing.T) []tarEntry {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testhost.Skip(t, "needs a static busybox on the host as the test image's shell (apt-get install busybox-static)")
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	return []tarEntry{
		{tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin"}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/busybox", Mode: 0o755}, string(b)},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/sh", Linkname: "busybox"}, ""},
		{tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/sleep", Linkname: "busybox"}, ""},
	}
}

// rootfsTar is a small root file system exercising what BuildRootfs must
// keep: owners, a setuid file, a symlink, hard links, device nodes (one
// hard-linked), a FIFO and extended attributes (and one it cannot keep).
func rootfsTar(t *testing.T) func(context.Context, io.Writer) error {
	t.Helper()
	return writeTar(append(baseEntries(t), []tarEntry{
		{tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "home/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "home/alice/", Mode: 0o700, Uid: 1000, Gid: 1000}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "home/alice/notes", Mode: 0o640, Uid: 1000, Gid: 1000}, "hello\n"},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, "root:x:0:0::/root:/bin/sh\n"},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/su", Mode: 0o4755}, "#!/bin/true\n"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/su2", Linkname: "usr/bin/su"}, ""},
		{tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
		{tar.Header{Typeflag: tar.TypeLink, Name: "dev/null2", Linkname: "dev/null"}, ""},
		{tar.Header{Typeflag: tar.TypeBlock, Name: "dev/vdb", Mode: 0o660, Gid: 6, Devmajor: 254, Devminor: 16}, ""},
		{tar.Header{Typeflag: tar.TypeFifo, Name: "home/alice/pipe", Mode: 0o600, Uid: 1000, Gid: 1000}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/ping", Mode: 0o755, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.banger":         "kept",
			"SCHILY.xattr.trusted.overlay":     "host privilege only",
		}}, "ping\n"},
	}...))
}

func needRootfsTools(t *testing.T) subid.IDs {
	t.Helper()
	if err := CheckRootfsTools(); err != nil {
		testhost.Skip(t, "missing tools: %v", err)
	}
	return testhost.SubIDs(t)
}

// scriptsDir makes a scripts folder whose customize.sh is script.
func scriptsDir(t *testing.T, script string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "scripts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(dir), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "customize.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
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
	ids := needRootfsTools(t)
	dir := t.TempDir()
	// A stand-in for scripts/customize.sh (tested on its own): it proves
	// the script ran with the image's shell in the tree, with the
	// environment, /proc and /dev, and that it cannot see the host.
	scripts := scriptsDir(t, `set -e
[ -r /proc/self/status ] || { echo "no /proc in the tree" >&2; exit 1; }
[ -c /dev/zero ] || { echo "no /dev in the tree" >&2; exit 1; }
[ "$BANGER_IN_SANDBOX" = 1 ] || { echo "not told it is in the sandbox" >&2; exit 1; }
[ ! -e /home/alice/../../`+filepath.Base(dir)+` ] || { echo "sees the host" >&2; exit 1; }
echo "$BANGER_SSH_PUBKEY" > /etc/customized
echo "customize: done" >&2
`)
	out := filepath.Join(dir, "out.ext4")
	var phases []string
	var log bytes.Buffer
	err := BuildRootfs(context.Background(), RootfsOptions{
		Tar: rootfsTar(t), Output: out, Scripts: scripts, SSHPubKey: "ssh-ed25519 AAAA test", IDs: ids,
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
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 || !ownedByMe(fi) {
		t.Errorf("image %v: want mode 0644 and owned by the daemon's user", fi)
	}
	if fsck, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, fsck)
	}
	checks := map[string][]string{
		"stat /home/alice/notes": {"User:  1000", "Group:  1000", "Mode:  0640"},
		"stat /home/alice":       {"Type: directory", "User:  1000", "Mode:  0700"},
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
	if got := debugfsOut(t, out, "ea_list /usr/bin/ping"); strings.Contains(got, "trusted") {
		t.Errorf("a trusted.* attribute reached the image:\n%s", got)
	}
	for _, want := range []string{"customize: done", "extended attribute not kept", "/usr/bin/ping: trusted.overlay"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, log.String())
		}
	}
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

func TestBuildRootfsFailureLeavesNothing(t *testing.T) {
	ids := needRootfsTools(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "images", "out.ext4")
	os.MkdirAll(filepath.Dir(out), 0o755)
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o755)
	build := func(ctx context.Context, tarFn func(context.Context, io.Writer) error, script string) error {
		return BuildRootfs(ctx, RootfsOptions{Tar: tarFn, Output: out, Scripts: scriptsDir(t, script), IDs: ids, TempDir: tmp})
	}
	err := build(context.Background(), rootfsTar(t), "echo 'customize: error: this image is hopeless' >&2; exit 3\n")
	if err == nil || !strings.Contains(err.Error(), "customize.sh: this image is hopeless") {
		t.Fatalf("err = %v, want the script's message", err)
	}
	assertOnly(t, tmp)
	assertOnly(t, filepath.Dir(out))

	// A stream that fails half-way, and a cancelled build.
	boom := errors.New("registry went away")
	bad := func(ctx context.Context, w io.Writer) error {
		w.Write(make([]byte, 1024))
		return boom
	}
	if err := build(context.Background(), bad, "true\n"); !errors.Is(err, boom) {
		t.Fatalf("a failing stream: err = %v, want the stream's error", err)
	}
	assertOnly(t, tmp)
	assertOnly(t, filepath.Dir(out))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	// A duration no other process sleeps.
	sleep := fmt.Sprintf("sleep 30.%d", os.Getpid())
	if err := build(ctx, rootfsTar(t), sleep+"\n"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled build: err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancellation took %s", d)
	}
	assertOnly(t, tmp)
	assertOnly(t, filepath.Dir(out))
	if out, _ := exec.Command("pgrep", "-f", sleep).Output(); len(out) > 0 {
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

// TestBuildRootfsRefuses: streams a build must refuse, each with an error
// naming what is wrong, stopping early, leaving nothing.
func TestBuildRootfsRefuses(t *testing.T) {
	ids := needRootfsTools(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "images", "out.ext4")
	os.MkdirAll(filepath.Dir(out), 0o755)
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o755)
	scripts := scriptsDir(t, "echo customize ran >&2\n")
	base := baseEntries(t)
	longXattr := "user." + strings.Repeat("x", 10000) + "\n!touch /tmp/banger-pwned-xattr"
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		limits  tarlimit.Limits
		want    []string
	}{
		{"sparse file of 1 TiB", []tarEntry{{tar.Header{Typeflag: rawEntry}, string(testhost.SparseTar("huge", 1<<40))}},
			tarlimit.Limits{}, []string{"larger than a build may be", `"/huge" alone is 1 TiB`}},
		{"over max_size", []tarEntry{{tar.Header{Typeflag: tar.TypeReg, Name: "big"}, strings.Repeat("x", 3<<20)}},
			tarlimit.Limits{MaxBytes: 2 << 20}, []string{"more than 2 MiB", "[image] max_size"}},
		{"over max_files", []tarEntry{{tar.Header{Typeflag: tar.TypeDir, Name: "a/"}, ""}, {tar.Header{Typeflag: tar.TypeDir, Name: "b/"}, ""}},
			tarlimit.Limits{MaxFiles: int64(len(base)) + 1}, []string{"max_files", `"/b"`}},
		{"device node named with a newline", []tarEntry{{tar.Header{Typeflag: tar.TypeChar, Name: "dev/x\n!touch /tmp/banger-pwned-dev", Devmajor: 1, Devminor: 3}, ""}},
			tarlimit.Limits{}, []string{"device node path", `"/dev/x\n!touch`, "control character"}},
		{"xattr name of 10,000 bytes", []tarEntry{{tar.Header{Typeflag: tar.TypeReg, Name: "f", PAXRecords: map[string]string{"SCHILY.xattr." + longXattr: "v"}}, "x"}},
			tarlimit.Limits{}, []string{`"/f": extended attribute "user.xxx`, "a name of 10036 bytes", "limits are 255"}},
		{"owner outside the sandbox's ids", []tarEntry{{tar.Header{Typeflag: tar.TypeReg, Name: "f", Uid: 70000}, "x"}},
			tarlimit.Limits{}, []string{`"/f": owner 70000:0`}},
		{"no /etc", []tarEntry{}, tarlimit.Limits{}, []string{"no /etc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := append(append([]tarEntry(nil), base...), tc.entries...)
			if tc.name == "no /etc" {
				entries = base[1:]
			}
			var log bytes.Buffer
			start := time.Now()
			err := BuildRootfs(context.Background(), RootfsOptions{Tar: writeTar(entries), Output: out, Scripts: scripts,
				IDs: ids, TempDir: tmp, Limits: tc.limits, Log: &log})
			if err == nil {
				t.Fatalf("the build succeeded:\n%s", log.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %s to refuse", d)
			}
			if strings.Contains(log.String(), "customize ran") {
				t.Error("customize.sh ran on a refused stream")
			}
			assertOnly(t, tmp)
			assertOnly(t, filepath.Dir(out))
		})
	}
	for _, p := range []string{"/tmp/banger-pwned-xattr", "/tmp/banger-pwned-dev"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists: a name ran as a command", p)
		}
	}
}

// TestBuildRootfsRootless runs the BuildRootfs tests again as an ordinary
// user with subordinate ids (a per-user daemon builds images that way).
func TestBuildRootfsRootless(t *testing.T) {
	testhost.Attacker(t, repoFile(t, "."))
	testhost.RunAsRootless(t, "TestBuildRootfsKeepsOwnersDevicesAndXattrs", "TestBuildRootfsFailureLeavesNothing", "TestBuildRootfsRefuses",
		"TestBuildRootfsFromLayers", "TestBuildContainsHostileImages")
}

// TestBuildRootfsFromLayers: an OCI image of two layers (hard links, a
// whiteout of a hard-linked file, device nodes, extended attributes with
// awkward names) flattened and built, read back from the ext4 image.
func TestBuildRootfsFromLayers(t *testing.T) {
	ids := needRootfsTools(t)
	const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	layer := func(entries []tarEntry) v1.Layer {
		var buf bytes.Buffer
		if err := writeTar(entries)(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l1 := layer(append(baseEntries(t), []tarEntry{
		{tar.Header{Typeflag: tar.TypeDir, Name: "opt/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "opt/su", Mode: 0o4755}, "su"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "opt/su-link", Linkname: "opt/su"}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "opt/pair", Mode: 0o755}, "p"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "opt/pair2", Linkname: "opt/pair"}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "opt/ping", Mode: 0o755, Uid: 1000, Gid: 1001,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capNetRaw}}, "ping"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "opt/ping-again", Linkname: "opt/ping"}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "opt/with space", Mode: 0o644,
			PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hello world"}}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "opt/libarchive/", Mode: 0o755,
			PAXRecords: map[string]string{"LIBARCHIVE.xattr.user.a%20b": "dmFsdWU="}}, ""},
	}...))
	l2 := layer([]tarEntry{
		{tar.Header{Typeflag: tar.TypeReg, Name: "opt/.wh.su", Mode: 0o644}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, ""},
	})
	img, err := mutate.AppendLayers(empty.Image, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ext4")
	var log bytes.Buffer
	err = BuildRootfs(context.Background(), RootfsOptions{
		Tar: func(ctx context.Context, w io.Writer) error {
			return oci.FlattenContext(ctx, img, w, tarlimit.Limits{}, nil)
		},
		Output: out, Scripts: scriptsDir(t, "true\n"), IDs: ids, TempDir: dir, Log: &log,
	})
	if err != nil {
		t.Fatalf("BuildRootfs: %v\n%s", err, log.String())
	}
	for _, c := range []struct{ req, want string }{
		{"stat /opt/su-link", "Mode:  04755"},
		{"stat /opt/su-link", "Links: 1"},
		{"stat /opt/pair2", "Links: 2"},
		{"stat /opt/ping", "User:  1000   Group:  1001"},
		{"stat /dev/null", "Type: character special"},
		{"stat /dev/null", "Device major/minor number: 01:03"},
		{"stat /tmp", "Mode:  01777"},
		{"stat /opt/su", "File not found"},
		{"ea_list /opt/ping", "security.capability (20) = 01 00 00 02 00 20 00"},
		{"ea_list /opt/ping-again", "security.capability (20)"},
		{`ea_list "/opt/with space"`, `user.note (11) = "hello world"`},
		{"ea_list /opt/libarchive", `user.a b (5) = "value"`},
	} {
		if got := debugfsOut(t, out, c.req); !strings.Contains(got, c.want) {
			t.Errorf("debugfs %s: want %q in\n%s", c.req, c.want, got)
		}
	}
}
