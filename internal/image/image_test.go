package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// requireTools skips the test when a host tool is missing.
func requireTools(t *testing.T, ts ...tool) map[string]string {
	t.Helper()
	paths, err := lookTools(ts...)
	if err != nil {
		testhost.Skip(t, "skipping: %v", err)
	}
	return paths
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	if p, err := lookTool(tool{name, "?"}); err == nil {
		name = p
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeExt4 makes an ext4 image of size bytes holding a small tree, and
// returns its path and the content of /data/random.
func makeExt4(t *testing.T, dir string, size int64) (string, []byte) {
	t.Helper()
	requireTools(t, toolMkfs, toolDebugfs, tool{"dumpe2fs", "e2fsprogs"})
	tree := filepath.Join(dir, "tree")
	random := make([]byte, 3<<20+123)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"etc/hostname":    []byte("old\n"),
		"etc/ssh/moduli":  []byte("moduli\n"),
		"data/random":     random,
		"data/small.txt":  []byte("hello from the source image\n"),
		"root/.bashrc":    []byte("# bashrc\n"),
		"usr/bin/program": []byte("#!/bin/sh\necho hi\n"),
	}
	for name, data := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "src.ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mkfs.ext4", "-q", "-F", "-L", "test", "-d", tree, img)
	return img, random
}

// fsBytes is the ext4 file system size from dumpe2fs: block count * block size.
func fsBytes(t *testing.T, img string) int64 {
	t.Helper()
	out := mustRun(t, "dumpe2fs", "-h", img)
	count := regexp.MustCompile(`(?m)^Block count:\s+(\d+)`).FindStringSubmatch(out)
	bsize := regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(out)
	if count == nil || bsize == nil {
		t.Fatalf("cannot parse dumpe2fs output:\n%s", out)
	}
	c, _ := strconv.ParseInt(count[1], 10, 64)
	b, _ := strconv.ParseInt(bsize[1], 10, 64)
	return c * b
}

func debugfsCat(t *testing.T, img, path string) []byte {
	t.Helper()
	p, err := lookTool(toolDebugfs)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "-R", "cat "+path, img).Output() // stderr has the banner
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return out
}

func debugfsStat(t *testing.T, img, path string) string {
	t.Helper()
	return mustRun(t, "debugfs", "-R", "stat "+path, img)
}

// statFields pulls type, mode and owner out of debugfs stat output.
func statFields(t *testing.T, out string) (typ, mode, uid, gid string) {
	t.Helper()
	tm := regexp.MustCompile(`Type:\s+(.+?)\s+Mode:\s+([0-7]+)`).FindStringSubmatch(out)
	ow := regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`).FindStringSubmatch(out)
	if tm == nil || ow == nil {
		t.Fatalf("cannot parse debugfs stat output:\n%s", out)
	}
	m, err := strconv.ParseUint(tm[2], 8, 32)
	if err != nil {
		t.Fatal(err)
	}
	return tm[1], fmt.Sprintf("%04o", m), ow[1], ow[2]
}

// dirNames lists a folder's entries, to check that nothing temporary is left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func fsck(t *testing.T, img string) {
	t.Helper()
	mustRun(t, "e2fsck", "-fn", img)
}

func TestCloneDiskGrowsFileSystem(t *testing.T) {
	requireTools(t, toolE2fsck, toolResize2fs)
	dir := t.TempDir()
	src, random := makeExt4(t, dir, 128<<20)
	before, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "vm.ext4")
	const size = 1 << 30
	if err := CloneDisk(context.Background(), src, dst, size); err != nil {
		t.Fatal(err)
	}

	apparent, allocated, err := Size(dst)
	if err != nil {
		t.Fatal(err)
	}
	if apparent != size {
		t.Errorf("dst apparent size %d, want %d", apparent, size)
	}
	_, srcAlloc, _ := Size(src)
	// Sparse: resize2fs adds group metadata, but nothing near the 1 GiB.
	if allocated > srcAlloc+64<<20 {
		t.Errorf("dst allocates %d bytes, src %d: the copy is not sparse", allocated, srcAlloc)
	}
	if got := fsBytes(t, dst); got != size {
		t.Errorf("file system is %d bytes after resize, want %d", got, size)
	}
	if got := debugfsCat(t, dst, "/data/random"); !bytes.Equal(got, random) {
		t.Errorf("/data/random differs after clone (%d bytes, want %d)", len(got), len(random))
	}
	if got := string(debugfsCat(t, dst, "/data/small.txt")); got != "hello from the source image\n" {
		t.Errorf("/data/small.txt = %q", got)
	}
	fsck(t, dst)

	after, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("source image changed")
	}
	if names := dirNames(t, dir); strings.Join(names, ",") != "src.ext4,tree,vm.ext4" {
		t.Errorf("folder holds %v, want only src.ext4, tree, vm.ext4", names)
	}
}

func TestCloneDiskSameSizeIsIdentical(t *testing.T) {
	dir := t.TempDir()
	src, _ := makeExt4(t, dir, 64<<20)
	dst := filepath.Join(dir, "vm.ext4")
	if err := CloneDisk(context.Background(), src, dst, 64<<20); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("same-size clone differs from its source")
	}
}

func TestCloneDiskErrors(t *testing.T) {
	dir := t.TempDir()
	src, _ := makeExt4(t, dir, 64<<20)
	existing := filepath.Join(dir, "existing.ext4")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		dst     string
		size    int64
		wantErr []string
		is      error
	}{
		{"too small", context.Background(), "small.ext4", 32 << 20,
			[]string{"33554432 bytes", "67108864 bytes", "smaller"}, nil},
		{"exists", context.Background(), "existing.ext4", 64 << 20, nil, fs.ErrExist},
		{"cancelled", cancelled, "cancelled.ext4", 128 << 20, nil, context.Canceled},
		{"missing source", context.Background(), "x.ext4", 64 << 20, nil, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := src
			if tt.name == "missing source" {
				s = filepath.Join(dir, "nope.ext4")
			}
			err := CloneDisk(tt.ctx, s, filepath.Join(dir, tt.dst), tt.size)
			if err == nil {
				t.Fatal("CloneDisk succeeded, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
		})
	}
	if got, _ := os.ReadFile(existing); string(got) != "keep me" {
		t.Errorf("existing destination was changed to %q", got)
	}
	if names := dirNames(t, dir); strings.Join(names, ",") != "existing.ext4,src.ext4,tree" {
		t.Errorf("after failed clones the folder holds %v", names)
	}
}

// TestCloneDiskSkipsHoles clones an 8 GiB file holding 8 MiB of data: the
// copy must neither write the holes (allocation) nor read them (time).
func TestCloneDiskSkipsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sparse.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 30
	chunk := make([]byte, 2<<20)
	offsets := []int64{0, 1 << 30, 5<<30 + 4096, size - int64(len(chunk))}
	for i, off := range offsets {
		for j := range chunk {
			chunk[j] = byte(i + 1)
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	dst := filepath.Join(dir, "clone.img")
	start := time.Now()
	if err := CloneDisk(context.Background(), src, dst, size); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	apparent, allocated, err := Size(dst)
	if err != nil {
		t.Fatal(err)
	}
	if apparent != size {
		t.Errorf("apparent size %d, want %d", apparent, size)
	}
	if allocated > 32<<20 {
		t.Errorf("clone allocates %d bytes for 8 MiB of data: holes were copied", allocated)
	}
	// Reading 8 GiB of holes takes several seconds even from the page cache.
	if elapsed > 3*time.Second {
		t.Errorf("clone took %s: holes were read", elapsed)
	}
	g, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	buf := make([]byte, len(chunk))
	for i, off := range offsets {
		if _, err := g.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if buf[0] != byte(i+1) || buf[len(buf)-1] != byte(i+1) {
			t.Errorf("data at %d not copied", off)
		}
	}
	if _, err := g.ReadAt(buf[:1], 3<<30); err != nil || buf[0] != 0 {
		t.Errorf("hole at 3 GiB reads %v, %v", buf[0], err)
	}
	t.Logf("8 GiB file with 8 MiB of data cloned in %s, %d bytes allocated", elapsed, allocated)
}

func TestInjectFiles(t *testing.T) {
	requireTools(t, toolE2fsck)
	dir := t.TempDir()
	img, random := makeExt4(t, dir, 64<<20)
	key := []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really a key\n-----END OPENSSH PRIVATE KEY-----\n")
	files := []File{
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: key},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Data: []byte("ssh-ed25519 AAAA host\n")},
		{Path: "/root/.ssh", Mode: os.ModeDir | 0o700},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: []byte("ssh-ed25519 AAAA user\n")},
		{Path: "/etc/hostname", Mode: 0o644, Data: []byte("vm1\n")}, // replaces "old"
		{Path: "/home/dev/deep/dir/file", Mode: 0o640, UID: 1000, GID: 70000, Data: []byte("x")},
		{Path: "/usr/local/bin/suid", Mode: 0o755 | os.ModeSetuid, Data: []byte("#!/bin/sh\n")},
		{Path: "/empty", Mode: 0o600},
	}
	if err := InjectFiles(context.Background(), img, files); err != nil {
		t.Fatal(err)
	}
	// Twice is the same as once.
	if err := InjectFiles(context.Background(), img, files); err != nil {
		t.Fatalf("second injection: %v", err)
	}

	want := []struct {
		path, typ, mode, uid, gid string
	}{
		{"/etc/ssh/ssh_host_ed25519_key", "regular", "0600", "0", "0"},
		{"/etc/ssh/ssh_host_ed25519_key.pub", "regular", "0644", "0", "0"},
		{"/root/.ssh", "directory", "0700", "0", "0"},
		{"/root/.ssh/authorized_keys", "regular", "0600", "0", "0"},
		{"/etc/hostname", "regular", "0644", "0", "0"},
		{"/home/dev/deep/dir", "directory", "0755", "0", "0"},
		{"/home/dev/deep/dir/file", "regular", "0640", "1000", "70000"},
		{"/usr/local/bin/suid", "regular", "4755", "0", "0"},
	}
	for _, w := range want {
		typ, mode, uid, gid := statFields(t, debugfsStat(t, img, w.path))
		if typ != w.typ || mode != w.mode || uid != w.uid || gid != w.gid {
			t.Errorf("%s: %s %s %s:%s, want %s %s %s:%s", w.path, typ, mode, uid, gid, w.typ, w.mode, w.uid, w.gid)
		}
	}
	for _, f := range files {
		if f.Mode.IsDir() {
			continue
		}
		if got := debugfsCat(t, img, f.Path); !bytes.Equal(got, f.Data) {
			t.Errorf("%s holds %q, want %q", f.Path, got, f.Data)
		}
	}
	if got := debugfsCat(t, img, "/data/random"); !bytes.Equal(got, random) {
		t.Error("/data/random was damaged")
	}
	fsck(t, img)
}

func TestInjectFilesRejects(t *testing.T) {
	dir := t.TempDir()
	img, _ := makeExt4(t, dir, 64<<20)
	for _, p := range []string{"etc/x", "/etc/../x", "/etc/a b", "/", `/etc/"x`} {
		if err := InjectFiles(context.Background(), img, []File{{Path: p, Mode: 0o644}}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
	if err := InjectFiles(context.Background(), filepath.Join(dir, "missing"), []File{{Path: "/x", Mode: 0o644}}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing disk: %v, want ErrNotExist", err)
	}
	// A regular file cannot be written where a directory is: the read-back
	// catches what debugfs does not report.
	err := InjectFiles(context.Background(), img, []File{{Path: "/etc/ssh", Mode: 0o644, Data: []byte("x")}})
	if err == nil || !strings.Contains(err.Error(), "/etc/ssh") {
		t.Errorf("writing a file over a directory: %v", err)
	}
}

func TestImageSize(t *testing.T) {
	const mib = 1 << 20
	tests := []struct{ used, want int64 }{
		{0, 256 * mib},
		{1, 320 * mib},
		{400 * mib, 768 * mib},   // 400*1.25+256 = 756 -> 768
		{1024 * mib, 1536 * mib}, // 1280+256 = 1536 exactly
	}
	for _, tt := range tests {
		if got := imageSize(tt.used); got != tt.want {
			t.Errorf("imageSize(%d MiB) = %d MiB, want %d MiB", tt.used/mib, got/mib, tt.want/mib)
		}
	}
}

func TestMissingToolError(t *testing.T) {
	_, err := lookTool(tool{"banger-no-such-tool", "banger-pkg"})
	if !errors.Is(err, ErrMissingTool) {
		t.Fatalf("error %v does not wrap ErrMissingTool", err)
	}
	for _, w := range []string{"banger-no-such-tool", "apt-get install banger-pkg"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestCheckDebugfsPath: what reaches a debugfs command file is one plain
// argument, or refused with the path named.
func TestCheckDebugfsPath(t *testing.T) {
	for _, ok := range []string{"/dev/null", "/etc/ssh/ssh_host_ed25519_key", "/a-b_c.d/e+f@g", "/" + strings.Repeat("x", 255)} {
		if err := checkDebugfsPath(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"etc/x":                                "absolute and clean",
		"/etc/../x":                            "absolute and clean",
		"/":                                    "absolute and clean",
		"/dev/x\n!touch /tmp/pwned":            `"/dev/x\n!touch /tmp/pwned"`,
		"/dev/x\r!reboot":                      "control character",
		"/dev/a b":                             "white space",
		"/dev/\"x":                             "quote",
		"/dev/x\\y":                            "backslash",
		"/dev/\x7f":                            "control character",
		"/" + strings.Repeat("x", 256):         "longer than 255 bytes",
		"/" + strings.Repeat("x/", 2100) + "x": "longer than 4000 bytes",
	} {
		err := checkDebugfsPath(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkDebugfsPath(%.40q) = %v, want an error saying %q", bad, err, want)
		}
	}
}

func TestSanitizeLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain\ttext é":      "plain\ttext é",
		"\x1b[31mred\x1b[0m": `\u001b[31mred\u001b[0m`,
		"bell\a and \x00":    `bell\u0007 and \u0000`,
		"bad utf8 \xff\xfe":  `bad utf8 \xff\xfe`,
		"c1 \u009b31m":       `c1 \u009b31m`,
		"carriage\rreturn":   `carriage\u000dreturn`,
	} {
		if got := SanitizeLine(in); got != want {
			t.Errorf("SanitizeLine(%q) = %q, want %q", in, got, want)
		}
	}
}
