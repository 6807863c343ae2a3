package image

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

// mkfsTree makes an ext4 image of the tree built by fill.
func mkfsTree(t *testing.T, fill func(root string)) string {
	t.Helper()
	mkfs, err := lookTool(toolMkfs)
	if err != nil {
		testhost.Skip(t, "%v", err)
	}
	if _, err := lookTools(toolE2fsck, toolDebugfs); err != nil {
		testhost.Skip(t, "%v", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	fill(root)
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

func TestCheckExt4(t *testing.T) {
	ctx := context.Background()
	img := mkfsTree(t, func(root string) { os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644) })
	if err := CheckExt4(ctx, img); err != nil {
		t.Fatalf("sound file system: %v", err)
	}
	// Cut in half: the superblock claims more blocks than the file has.
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	err := CheckExt4(ctx, img)
	if !errors.Is(err, ErrBadFileSystem) || !strings.Contains(err.Error(), "e2fsck -fn exit status") {
		t.Fatalf("truncated file system: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	if err := CheckExt4(ctx, junk); !errors.Is(err, ErrBadFileSystem) {
		t.Fatalf("zeros: %v", err)
	}
}

func TestInspectExt4(t *testing.T) {
	ctx := context.Background()
	img := mkfsTree(t, func(root string) {
		os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
		os.MkdirAll(filepath.Join(root, "usr/lib/modules/6.1.0-18-amd64/kernel"), 0o755)
		os.WriteFile(filepath.Join(root, "usr/lib/modules/README"), []byte("not a release"), 0o644)
		os.Symlink("usr/lib", filepath.Join(root, "lib"))
		os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), []byte("x"), 0o755)
		os.MkdirAll(filepath.Join(root, "usr/local/bin/banger-vsock-pingd"), 0o755) // a directory is not the agent
	})
	info, err := InspectExt4(ctx, img, []string{"/usr/sbin/sshd", "/usr/local/bin/banger-vsock-pingd", "/nope"})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Present["/usr/sbin/sshd"] || info.Present["/usr/local/bin/banger-vsock-pingd"] || info.Present["/nope"] {
		t.Fatalf("present: %v", info.Present)
	}
	if strings.Join(info.KernelModules, ",") != "6.1.0-18-amd64" {
		t.Fatalf("kernel modules (one tree seen through /lib and /usr/lib): %v", info.KernelModules)
	}

	two := mkfsTree(t, func(root string) {
		os.MkdirAll(filepath.Join(root, "lib/modules/6.1.0-17-amd64"), 0o755)
		os.MkdirAll(filepath.Join(root, "usr/lib/modules/6.1.0-18-amd64"), 0o755)
	})
	if info, err := InspectExt4(ctx, two, nil); err != nil || strings.Join(info.KernelModules, ",") != "6.1.0-17-amd64,6.1.0-18-amd64" {
		t.Fatalf("two module trees: %v, %v", info.KernelModules, err)
	}
	none := mkfsTree(t, func(string) {})
	if info, err := InspectExt4(ctx, none, nil); err != nil || len(info.KernelModules) != 0 {
		t.Fatalf("no module tree: %v, %v", info.KernelModules, err)
	}

	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	if _, err := InspectExt4(ctx, junk, []string{"/x"}); err == nil {
		t.Fatal("InspectExt4 of zeros succeeded")
	}
}

func TestParseLsDirs(t *testing.T) {
	out := "/15/040755/0/0/.//\n/14/040755/0/0/..//\n/16/040755/0/0/6.1.0-18-amd64//\n/17/100644/0/0/README/13/\n\n"
	if got := parseLsDirs(out); strings.Join(got, ",") != "6.1.0-18-amd64" {
		t.Fatalf("got %v", got)
	}
}

// TestInspectImported: the same answers from the sandbox, and a damaged or
// foreign file is a bad file system named by its host path.
func TestInspectImported(t *testing.T) {
	ids := needRootfsTools(t)
	ctx := context.Background()
	img := mkfsTree(t, func(root string) {
		os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
		os.MkdirAll(filepath.Join(root, "lib/modules/6.1.0-18-amd64"), 0o755)
		os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), []byte("x"), 0o755)
	})
	os.Chmod(img, 0o600)
	info, err := InspectImported(ctx, ids, img, []string{"/usr/sbin/sshd", "/nope"})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Present["/usr/sbin/sshd"] || info.Present["/nope"] || strings.Join(info.KernelModules, ",") != "6.1.0-18-amd64" {
		t.Fatalf("got %+v", info)
	}
	if fi, err := os.Stat(img); err != nil || !ownedByMe(fi) || fi.Mode().Perm() != 0o600 {
		t.Errorf("the file was not given back as it was: %v %v", fi, err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	_, err = InspectImported(ctx, ids, junk, []string{"/x"})
	if !errors.Is(err, ErrBadFileSystem) || !strings.Contains(err.Error(), junk) {
		t.Fatalf("zeros: %v, want ErrBadFileSystem naming %s", err, junk)
	}
}
