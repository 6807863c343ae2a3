package oci

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestFlattenThroughFakerootAndMkfs checks the output where it is used: the
// Debian path's fakeroot extract + mkfs.ext4 -d, read back with debugfs.
// Extended attributes are left out: with fakeroot 1.31, tar --xattrs
// leaves files whose faked st_mode has no file type, so mkfs.ext4 -d stops
// with `ignoring entry` / `File not found by ext2_lookup`. Xattrs are checked
// in the tar itself (TestFlattenKeepsMetadata); the build must apply them
// another way (for example debugfs ea_set after mkfs).
func TestFlattenThroughFakerootAndMkfs(t *testing.T) {
	tools := needTools(t)
	img := imageOf(t, "amd64",
		layerOf(t,
			dir("bin/", 0o755), file("bin/su", "su", 0o4755), hardlink("bin/su-link", "bin/su"),
			file("bin/pair", "p", 0o755), hardlink("bin/pair2", "bin/pair"),
			dir("dev/", 0o755),
			ent{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}},
			ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/ping", Mode: 0o755, Uid: 1000, Gid: 1001, Size: 4, ModTime: mtime,
				PAXRecords: map[string]string{"SCHILY.xattr.user.origin": "layer1"}}, body: "ping"},
		),
		layerOf(t, whiteout("bin/.wh.su"), dir("tmp/", 0o1777)),
	)
	ext4 := buildExt4(t, tools, img)
	debugfs := func(cmd string) string { return runDebugfs(t, tools, ext4, cmd) }
	for _, c := range []struct{ cmd, want string }{
		{"stat /bin/su-link", "Mode:  04755"},
		{"stat /bin/su-link", "Links: 1"},
		{"stat /bin/pair2", "Links: 2"},
		{"stat /bin/ping", "User:  1000   Group:  1001"},
		{"stat /dev/null", "Type: character special"},
		{"stat /dev/null", "Device major/minor number: 01:03"},
		{"stat /tmp", "Mode:  01777"},
	} {
		if got := debugfs(c.cmd); !strings.Contains(got, c.want) {
			t.Errorf("debugfs %s: want %q in\n%s", c.cmd, c.want, got)
		}
	}
	if got := debugfs("stat /bin/su"); !strings.Contains(got, "File not found") {
		t.Errorf("/bin/su should be gone:\n%s", got)
	}
}

func needTools(t *testing.T) map[string]string {
	t.Helper()
	tools := map[string]string{}
	for _, n := range []string{"fakeroot", "tar", "mkfs.ext4", "debugfs"} {
		p, err := exec.LookPath(n)
		if err != nil {
			t.Skipf("needs %s: %v", n, err)
		}
		tools[n] = p
	}
	return tools
}

func runDebugfs(t *testing.T, tools map[string]string, ext4, cmd string) string {
	t.Helper()
	out, err := exec.Command(tools["debugfs"], "-R", cmd, ext4).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// buildExt4 flattens img and makes an ext4 image of it the way the Debian
// path does (fakeroot: tar -x, mkfs.ext4 -d). It returns the image and the
// flattened tar.
func buildExt4(t *testing.T, tools map[string]string, img v1.Image) string {
	t.Helper()
	work := t.TempDir()
	rootfs := filepath.Join(work, "rootfs.tar")
	f, err := os.Create(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if err := Flatten(img, f, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ext4 := filepath.Join(work, "root.ext4")
	script := `set -e
mkdir "$1"
tar -xpf "$2" -C "$1" --numeric-owner
truncate -s 64M "$3"
mkfs.ext4 -q -F -d "$1" "$3"`
	out, err := exec.Command(tools["fakeroot"], "sh", "-c", script, "x", filepath.Join(work, "tree"), rootfs, ext4).CombinedOutput()
	if err != nil {
		t.Fatalf("fakeroot extract + mkfs: %v\n%s", err, out)
	}
	return ext4
}
