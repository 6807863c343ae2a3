package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/imagesvc"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vm"
	"github.com/bangerhq/banger/internal/vmm"
)

// nopNet is a host network that does nothing: the tests never boot a VM.
type nopNet struct{}

func (nopNet) EnsureBridge(context.Context) error                   { return nil }
func (nopNet) CreateTAP(string, string, string, vmm.Identity) error { return nil }
func (nopNet) CreateDetachedTAP(string, vmm.Identity) error         { return nil }
func (nopNet) AdoptTAP(string, string, string) error                { return nil }
func (nopNet) DeleteTAP(string) error                               { return nil }
func (nopNet) TAPExists(string) bool                                { return false }

// newImageTestDaemon returns a daemon with a real store and image and VM
// services (no VMM drivers, no network) serving on a temp socket.
func newImageTestDaemon(t *testing.T) (*Daemon, *client.Client) {
	t.Helper()
	root := t.TempDir()
	dirs := paths.Dirs{Config: filepath.Join(root, "config"), State: filepath.Join(root, "state"),
		Data: filepath.Join(root, "data"), Cache: filepath.Join(root, "cache"), Runtime: filepath.Join(root, "run")}
	for _, p := range []string{dirs.State, dirs.ImagesDir(), dirs.VMsDir()} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(context.Background(), dirs.Database())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)
	d := &Daemon{dirs: dirs, store: st, log: log}
	d.vms = vm.New(vm.Config{Dirs: dirs}, st, map[string]vmm.Driver{}, nopNet{}, log)
	d.images = imagesvc.New(imagesvc.Config{Dirs: dirs}, st, log)
	return d, client.New(startTestServer(t, d.methods()))
}

// makeExt4 builds a small ext4 image of a root file system with an SSH
// server, the guest agent and one kernel module tree (under /usr/lib, with
// /lib a symlink as on a merged-/usr system).
func makeExt4(t *testing.T) string {
	t.Helper()
	testhost.NeedTools(t, "mkfs.ext4", "e2fsck", "debugfs")
	dir := t.TempDir()
	tree := filepath.Join(dir, "root")
	for _, p := range []string{"usr/sbin", "usr/local/bin", "usr/lib/modules/6.1.0-test", "etc"} {
		os.MkdirAll(filepath.Join(tree, p), 0o755)
	}
	os.Symlink("usr/lib", filepath.Join(tree, "lib"))
	os.WriteFile(filepath.Join(tree, "usr/sbin/sshd"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(tree, "usr/local/bin/banger-vsock-pingd"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("imported\n"), 0o644)
	img := filepath.Join(dir, "disk.img")
	mkfs := "mkfs.ext4"
	if _, err := exec.LookPath(mkfs); err != nil {
		mkfs = "/usr/sbin/mkfs.ext4"
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", tree, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

func sha256sum(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", file).Output()
	if err != nil {
		testhost.Skip(t, "sha256sum: %v", err)
	}
	return "sha256:" + strings.Fields(string(out))[0]
}

// imagesLeft returns the folders under the images directory and the rows
// of the images table, tombstones included.
func imagesLeft(t *testing.T, d *Daemon) (folders []string, rows int) {
	t.Helper()
	entries, err := os.ReadDir(d.dirs.ImagesDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		folders = append(folders, e.Name())
	}
	if err := d.store.DB.QueryRow("SELECT COUNT(*) FROM images").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return folders, rows
}

func importImage(ctx context.Context, c *client.Client, name, file string) (api.Image, error) {
	var im api.Image
	err := c.Call(ctx, api.MethodImageImport, api.ImageImportParams{Name: name, File: file}, &im)
	return im, err
}

func getImage(ctx context.Context, c *client.Client, name string) (api.Image, error) {
	var im api.Image
	err := c.Call(ctx, api.MethodImageGet, api.VMRef{Name: name}, &im)
	return im, err
}

func deleteImage(ctx context.Context, c *client.Client, name string, force bool) (api.Image, error) {
	var im api.Image
	err := c.Call(ctx, api.MethodImageDelete, api.ImageDeleteParams{Name: name, Force: force}, &im)
	return im, err
}

func TestImageImportExt4(t *testing.T) {
	ctx := context.Background()
	d, c := newImageTestDaemon(t)
	src := makeExt4(t)
	want := sha256sum(t, src)

	im, err := importImage(ctx, c, "imported", src)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(src)
	if im.Name != "imported" || im.Source != "import:disk.img" || im.Digest != want || im.SizeBytes != st.Size() ||
		im.KernelRelease != "6.1.0-test" || im.CreatedAt.IsZero() || im.Cached {
		t.Fatalf("imported image: %+v (want digest %s, size %d)", im, want, st.Size())
	}
	if len(im.Warnings) != 0 {
		t.Errorf("an image with sshd and the agent got warnings: %v", im.Warnings)
	}
	if im.AllocatedBytes <= 0 || im.AllocatedBytes > im.SizeBytes {
		t.Fatalf("allocated bytes %d for a %d-byte sparse image", im.AllocatedBytes, im.SizeBytes)
	}
	if filepath.Dir(filepath.Dir(im.Path)) != d.dirs.ImagesDir() || filepath.Base(im.Path) != "rootfs.ext4" {
		t.Fatalf("image path %s is not in its own folder under %s", im.Path, d.dirs.ImagesDir())
	}
	if got := sha256sum(t, im.Path); got != want {
		t.Fatalf("copy's digest %s, source's %s", got, want)
	}

	got, err := getImage(ctx, c, "imported")
	if err != nil || got.ID != im.ID || got.Digest != want || got.AllocatedBytes != im.AllocatedBytes {
		t.Fatalf("image.get: %+v, %v", got, err)
	}
	var l api.ImageList
	if err := c.Call(ctx, api.MethodImageList, nil, &l); err != nil || len(l.Images) != 1 || l.Images[0].Digest != want {
		t.Fatalf("image.list: %+v, %v", l, err)
	}

	// An image without sshd or the agent imports, with a warning for each.
	bare := filepath.Join(t.TempDir(), "bare")
	os.MkdirAll(filepath.Join(bare, "etc"), 0o755)
	bareImg := filepath.Join(t.TempDir(), "bare.img")
	if out, err := exec.Command("/usr/sbin/mkfs.ext4", "-q", "-F", "-d", bare, bareImg, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	b, err := importImage(ctx, c, "bare", bareImg)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(b.Warnings, "\n"); len(b.Warnings) != 2 || !strings.Contains(w, "no SSH server") || !strings.Contains(w, "no guest agent") {
		t.Errorf("warnings for a bare image: %v", b.Warnings)
	}
	if _, err := deleteImage(ctx, c, "bare", false); err != nil {
		t.Fatal(err)
	}

	// The name is taken now.
	if _, err := importImage(ctx, c, "imported", src); !client.IsExists(err) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second import of the name: %v", err)
	}
	if _, err := importImage(ctx, c, "Bad_Name", src); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("invalid name: %v", err)
	}
	if _, err := importImage(ctx, c, "rel", "disk.img"); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("relative path: %v", err)
	}
	if _, err := importImage(ctx, c, "gone", filepath.Join(t.TempDir(), "none.img")); !client.IsNotFound(err) {
		t.Fatalf("missing file: %v", err)
	}
	if folders, rows := imagesLeft(t, d); len(folders) != 1 || rows != 1 {
		t.Fatalf("after refused imports: folders %v, %d rows", folders, rows)
	}
}

func TestImageImportRefusesWhatIsNotAnImage(t *testing.T) {
	ctx := context.Background()
	d, c := newImageTestDaemon(t)
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage.ext4")
	os.WriteFile(garbage, bytes.Repeat([]byte("not an image "), 10000), 0o644)
	_, err := importImage(ctx, c, "garbage", garbage)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "neither an ext4 image nor a (compressed) tar archive") {
		t.Fatalf("garbage: %v", err)
	}

	// The ext4 magic alone does not make a file system: e2fsck refuses it
	// after the copy, and the copy goes.
	testhost.NeedTools(t, "e2fsck", "debugfs")
	fake := make([]byte, 1<<20)
	fake[1080], fake[1081] = 0x53, 0xEF
	fakePath := filepath.Join(dir, "fake.img")
	os.WriteFile(fakePath, fake, 0o644)
	_, err = importImage(ctx, c, "fake", fakePath)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "ext4") {
		t.Fatalf("broken ext4: %v", err)
	}

	if folders, rows := imagesLeft(t, d); len(folders) != 0 || rows != 0 {
		t.Fatalf("a refused import left folders %v and %d rows", folders, rows)
	}
}

func TestImageImportCancelledLeavesNothing(t *testing.T) {
	d, _ := newImageTestDaemon(t)
	src := makeExt4(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.images.Import(ctx, api.ImageImportParams{Name: "late", File: src}); err == nil {
		t.Fatal("import with a cancelled context succeeded")
	}
	if folders, rows := imagesLeft(t, d); len(folders) != 0 || rows != 0 {
		t.Fatalf("a cancelled import left folders %v and %d rows", folders, rows)
	}
}

// insertVM records a stopped VM built from image id, as vm create would,
// without making its disk.
func insertVM(t *testing.T, d *Daemon, name, imageID, mac string) {
	t.Helper()
	row := store.VM{ID: "vm-" + name, Name: name, ImageID: imageID, CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30,
		Kernel: "/k", KernelArgs: "console=ttyS0", MAC: mac, VMM: "qemu", DesiredState: store.DesiredStopped}
	if err := store.InsertVM(context.Background(), d.store.DB, &row); err != nil {
		t.Fatal(err)
	}
}

func TestImageRemoveWithUsersNeedsForceAndLeavesATombstone(t *testing.T) {
	ctx := context.Background()
	d, c := newImageTestDaemon(t)
	src := makeExt4(t)
	im, err := importImage(ctx, c, "base", src)
	if err != nil {
		t.Fatal(err)
	}
	insertVM(t, d, "dev", im.ID, "52:54:00:00:00:01")
	insertVM(t, d, "web", im.ID, "52:54:00:00:00:02")

	// Refused without --force, naming the VMs and the way out.
	_, err = deleteImage(ctx, c, "base", false)
	if !errors.Is(err, api.ErrPrecondition) || !strings.Contains(err.Error(), "dev, web") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("rm of a used image: %v", err)
	}
	if _, err := os.Stat(im.Path); err != nil {
		t.Fatalf("refused rm touched the file: %v", err)
	}
	if got, err := getImage(ctx, c, "base"); err != nil || strings.Join(got.UsedBy, ",") != "dev,web" {
		t.Fatalf("image after refused rm: %+v, %v", got, err)
	}

	// With --force: the file and folder go, the row stays as a tombstone.
	removed, err := deleteImage(ctx, c, "base", true)
	if err != nil {
		t.Fatal(err)
	}
	if removed.ID != im.ID || strings.Join(removed.UsedBy, ",") != "dev,web" || removed.AllocatedBytes == 0 {
		t.Fatalf("rm --force result: %+v", removed)
	}
	if _, err := os.Stat(filepath.Dir(im.Path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image folder after rm --force: %v", err)
	}
	if _, err := getImage(ctx, c, "base"); !client.IsNotFound(err) {
		t.Fatalf("image.get of a removed image: %v", err)
	}
	if _, err := getImage(ctx, c, im.ID); !client.IsNotFound(err) {
		t.Fatalf("image.get by id of a removed image: %v", err)
	}
	var l api.ImageList
	if err := c.Call(ctx, api.MethodImageList, nil, &l); err != nil || len(l.Images) != 0 {
		t.Fatalf("image.list shows the tombstone: %+v, %v", l, err)
	}
	v, err := c.GetVM(ctx, "dev")
	if err != nil || v.Image != "base (removed)" {
		t.Fatalf("vm.get after its image was removed: image %q, %v", v.Image, err)
	}

	// The name is free again, and the new image is a different one.
	again, err := importImage(ctx, c, "base", src)
	if err != nil {
		t.Fatalf("reuse the name: %v", err)
	}
	if again.ID == im.ID || len(again.UsedBy) != 0 {
		t.Fatalf("new image under the old name: %+v", again)
	}
	if v, _ := c.GetVM(ctx, "dev"); v.Image != "base (removed)" {
		t.Fatalf("vm.get after the name was reused: image %q", v.Image)
	}

	// The tombstone goes with the last VM that names it.
	tombstones := func() int {
		var n int
		d.store.DB.QueryRow("SELECT COUNT(*) FROM images WHERE removed_at != ''").Scan(&n)
		return n
	}
	if err := c.DeleteVM(ctx, "dev", false); err != nil {
		t.Fatal(err)
	}
	if n := tombstones(); n != 1 {
		t.Fatalf("%d tombstones after deleting one of two VMs, want 1", n)
	}
	if err := c.DeleteVM(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if n := tombstones(); n != 0 {
		t.Fatalf("%d tombstones after deleting the last VM, want 0", n)
	}

	// An unused image: row and folder go.
	if _, err := deleteImage(ctx, c, "base", false); err != nil {
		t.Fatal(err)
	}
	if folders, rows := imagesLeft(t, d); len(folders) != 0 || rows != 0 {
		t.Fatalf("after rm: folders %v, %d rows", folders, rows)
	}
	if _, err := deleteImage(ctx, c, "base", false); !client.IsNotFound(err) {
		t.Fatalf("rm of a missing image: %v", err)
	}
}

// A tarball goes to the rootfs-tar build; when that fails (here: the test
// daemon has no runtime bundle, or the stream is not gzip at all) nothing
// is left.
func TestImageImportTarballFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	d, c := newImageTestDaemon(t)
	dir := t.TempDir()
	tarball := filepath.Join(dir, "rootfs.tar")
	hdr := make([]byte, 10240)
	copy(hdr[257:], "ustar\x0000")
	os.WriteFile(tarball, hdr, 0o644)
	badGzip := filepath.Join(dir, "rootfs.tgz")
	os.WriteFile(badGzip, []byte{0x1f, 0x8b, 'n', 'o', 'p', 'e'}, 0o644)
	for _, f := range []string{tarball, badGzip} {
		_, err := importImage(ctx, c, "fromtar", f)
		if err == nil {
			t.Fatalf("import of %s without a runtime bundle succeeded", f)
		}
		if strings.Contains(err.Error(), "neither an ext4 image") {
			t.Fatalf("%s was not taken for a tarball: %v", f, err)
		}
		if folders, rows := imagesLeft(t, d); len(folders) != 0 || rows != 0 {
			t.Fatalf("a failed tarball import left folders %v and %d rows", folders, rows)
		}
	}
}

// TestCheckAgent: image.check_agent (`banger doctor`'s image-agent check,
// run by the daemon) reads real ext4 images: an image with the agent, one
// without, one whose file is gone and one that is not ext4.
func TestCheckAgent(t *testing.T) {
	ctx := context.Background()
	d, c := newImageTestDaemon(t)
	r, err := c.CheckImageAgent(ctx)
	if err != nil || r.Status != "ok" || r.Detail != "no images yet" {
		t.Fatalf("no images: %+v, %v", r, err)
	}
	withAgent := makeExt4(t) // holds /usr/local/bin/banger-vsock-pingd
	bare := filepath.Join(t.TempDir(), "bare")
	os.MkdirAll(filepath.Join(bare, "etc"), 0o755)
	withoutAgent := filepath.Join(t.TempDir(), "old.img")
	if out, err := exec.Command("/usr/sbin/mkfs.ext4", "-q", "-F", "-d", bare, withoutAgent, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	insert := func(id, name, path string) {
		t.Helper()
		if err := store.InsertImage(ctx, d.store.DB, &store.Image{ID: id, Name: name, Source: "debian:bookworm", Path: path}); err != nil {
			t.Fatal(err)
		}
	}
	insert("aaa", "fresh", withAgent)
	r, err = c.CheckImageAgent(ctx)
	if err != nil || r.Status != "ok" || !strings.Contains(r.Detail, "fresh") {
		t.Fatalf("one image with the agent: %+v, %v", r, err)
	}

	insert("bbb", "old", withoutAgent)
	r, err = c.CheckImageAgent(ctx)
	if err != nil || r.Status != "warn" || !strings.Contains(r.Detail, "1 of 2 images lack /usr/local/bin/banger-vsock-pingd") ||
		!strings.HasSuffix(r.Detail, ": old") || r.Fix != "banger image rm old && banger image build old --from debian:bookworm" {
		t.Fatalf("one image without the agent: %+v, %v", r, err)
	}

	junk := filepath.Join(t.TempDir(), "junk.img")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 4096), 0o644)
	insert("ccc", "gone", filepath.Join(t.TempDir(), "nowhere.ext4"))
	insert("ddd", "junk", junk)
	r, err = c.CheckImageAgent(ctx)
	if err != nil || r.Status != "warn" {
		t.Fatalf("unreadable images: %+v, %v", r, err)
	}
	for _, want := range []string{"image gone: image file", "image junk: bad ext4 file system", "Bad magic number"} {
		if !strings.Contains(r.Detail, want) {
			t.Errorf("detail %q lacks %q", r.Detail, want)
		}
	}
	if !strings.Contains(r.Fix, "banger image rm NAME") {
		t.Errorf("fix %q does not say what to do with unreadable images", r.Fix)
	}
}
