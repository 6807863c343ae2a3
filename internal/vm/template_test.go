package vm

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm/proc"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// writeTemplate makes a template folder with a manifest for image.
func writeTemplate(t *testing.T, s *Service, name, imageID string) string {
	t.Helper()
	dir := filepath.Join(s.cfg.Dirs.TemplatesDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(templateManifest{Key: name, ImageID: imageID, ImageName: "img-" + imageID, VMM: "qemu", CPUs: 1, MemoryMiB: 256})
	for f, data := range map[string][]byte{tplManifest: b, tplRAM: make([]byte, 8192)} {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestTemplatesListAndRemove: templates are listed per image with their
// size on disk, image rm's RemoveTemplates removes only that image's, and
// the start-up sweep removes unfinished builds, never finished templates.
func TestTemplatesListAndRemove(t *testing.T) {
	s, _ := newTestService(t)
	a1 := writeTemplate(t, s, "aaaa", "img1")
	a2 := writeTemplate(t, s, "bbbb", "img1")
	b1 := writeTemplate(t, s, "cccc", "img2")
	build := filepath.Join(s.cfg.Dirs.TemplatesDir(), ".build-x")
	if err := os.MkdirAll(build, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(build, tplRAM), []byte("half"), 0o600)
	// A VMM launched for the build but not yet recorded in vmm.json (the
	// daemon died during the launch) holds its disk.
	os.WriteFile(filepath.Join(build, tplDisk), []byte("disk"), 0o600)
	unrecorded := holdFile(t, filepath.Join(build, tplDisk))

	if got := s.Templates("img1"); len(got) != 2 || got[0].SizeBytes == 0 {
		t.Fatalf("Templates(img1) = %+v, want 2 with their size", got)
	}
	if got := s.Templates(""); len(got) != 3 {
		t.Fatalf("Templates() = %d, want 3 (an unfinished build is none)", len(got))
	}
	s.sweepTemplateBuilds(context.Background())
	if _, err := os.Stat(build); !os.IsNotExist(err) {
		t.Errorf("the sweep left the unfinished build: %v", err)
	}
	if proc.Alive(unrecorded.PID, unrecorded.StartTime) {
		t.Error("the sweep left the unrecorded VMM of the unfinished build running")
	}
	if err := s.RemoveTemplates("img1"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{a1, a2} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("RemoveTemplates(img1) left %s", d)
		}
	}
	if _, err := os.Stat(b1); err != nil {
		t.Errorf("RemoveTemplates(img1) removed another image's template: %v", err)
	}
}

// TestTemplateKey: the key follows the image, the disk size and the
// machine (here the memory); a VMM that cannot save has none.
func TestTemplateKey(t *testing.T) {
	s, _ := newTestService(t)
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	if _, err := s.drivers["qemu"].(interface{ Binary() (string, error) }).Binary(); err != nil {
		testhost.Skip(t, "no qemu: %v", err)
	}
	base := shape{img: store.Image{ID: "img1"}, vmm: "qemu", cpus: 1, mem: 256, disk: 1 << 30, kernel: kernel}
	key := func(sh shape) string {
		k, ok, err := s.templateKey(sh)
		if err != nil || !ok {
			t.Fatalf("templateKey: %v %v", ok, err)
		}
		return k
	}
	k0 := key(base)
	if key(base) != k0 {
		t.Fatal("the key is not stable")
	}
	for name, mod := range map[string]func(*shape){
		"image":  func(sh *shape) { sh.img.ID = "img2" },
		"disk":   func(sh *shape) { sh.disk = 2 << 30 },
		"memory": func(sh *shape) { sh.mem = 512 },
		"cpus":   func(sh *shape) { sh.cpus = 2 },
	} {
		sh := base
		mod(&sh)
		if key(sh) == k0 {
			t.Errorf("%s: the key does not change", name)
		}
	}
	if _, ok, _ := s.templateKey(shape{vmm: "none"}); ok {
		t.Error("a VMM that cannot save VMs has a template key")
	}
}

// TestTemplateKeptForClones: image rm retires a template whose disk
// backs a clone (no longer listed or found, its disk kept, the clone's
// disk still resolves to it) and removes the rest; the disk goes once the
// last clone's folder is gone, and not before.
func TestTemplateKeptForClones(t *testing.T) {
	s, _ := newTestService(t)
	key := "0123456789abcdef0123456789abcdef"
	dir := writeTemplate(t, s, key, "img1")
	os.WriteFile(filepath.Join(dir, tplDisk), []byte("disk"), 0o400)
	clones := []string{"vm1", "vm2"}
	for _, id := range clones {
		os.MkdirAll(s.cfg.Dirs.VMDir(id), 0o700)
		os.WriteFile(filepath.Join(s.cfg.Dirs.VMDir(id), cloneMarker), []byte(key+"\n"), 0o600)
	}
	os.MkdirAll(s.cfg.Dirs.VMDir("plain"), 0o700)
	if disk, backing, err := s.vmDisk("plain"); err != nil || disk != s.diskPath("plain") || backing != "" {
		t.Errorf("vmDisk of a VM that is no clone: %q %q %v", disk, backing, err)
	}
	if err := s.RemoveTemplates("img1"); err != nil {
		t.Fatal(err)
	}
	if got := s.Templates(""); len(got) != 0 {
		t.Errorf("a retired template is still listed: %+v", got)
	}
	for _, f := range []string{tplManifest, tplRAM} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("image rm left the retired template's %s: %v", f, err)
		}
	}
	disk, backing, err := s.vmDisk("vm1")
	if err != nil || disk != filepath.Join(s.cfg.Dirs.VMDir("vm1"), overlayName) || backing != filepath.Join(dir, tplDisk) {
		t.Fatalf("vmDisk of a clone of a retired template: %q %q %v", disk, backing, err)
	}
	for i, id := range clones {
		s.dropUnusedTemplates()
		if _, err := os.Stat(filepath.Join(dir, tplDisk)); err != nil {
			t.Fatalf("the retired template's disk went while %d clones use it: %v", len(clones)-i, err)
		}
		os.RemoveAll(s.cfg.Dirs.VMDir(id))
	}
	s.dropUnusedTemplates()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the retired template outlived its last clone: %v", err)
	}
	// A clone whose template disk is gone gets an error, not a path.
	os.MkdirAll(s.cfg.Dirs.VMDir("orphan"), 0o700)
	os.WriteFile(filepath.Join(s.cfg.Dirs.VMDir("orphan"), cloneMarker), []byte(key+"\n"), 0o600)
	if _, _, err := s.vmDisk("orphan"); err == nil {
		t.Error("vmDisk of a clone whose template disk is gone: no error")
	}
}

// TestMakeOverlay: a clone's disk is a real qcow2 overlay (qemu-img) of
// the template's disk, marked as the template's; a template removed
// meanwhile is refused and leaves no mark.
func TestMakeOverlay(t *testing.T) {
	s, _ := newTestService(t)
	d := qemu.New("", nil)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		testhost.Skip(t, "qemu-img not installed (apt-get install qemu-utils)")
	}
	key := "0123456789abcdef0123456789abcdef"
	dir := writeTemplate(t, s, key, "img1")
	os.WriteFile(filepath.Join(dir, tplDisk), make([]byte, 1<<20), 0o400)
	m, _ := readManifest(dir)
	row := store.VM{ID: "vm1", DiskBytes: 1 << 20}
	os.MkdirAll(s.cfg.Dirs.VMDir(row.ID), 0o700)
	if err := s.makeOverlay(context.Background(), d, row, m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.Dirs.VMDir(row.ID), overlayName))
	if err != nil || len(b) < 4 || string(b[:4]) != "QFI\xfb" {
		t.Errorf("the clone's disk is no qcow2 image: %v", err)
	}
	if k, ok := s.cloneOf(row.ID); !ok || k != key {
		t.Errorf("cloneOf = %q %v, want %s", k, ok, key)
	}
	os.Remove(filepath.Join(dir, tplManifest))
	row2 := store.VM{ID: "vm2", DiskBytes: 1 << 20}
	os.MkdirAll(s.cfg.Dirs.VMDir(row2.ID), 0o700)
	if err := s.makeOverlay(context.Background(), d, row2, m); err == nil {
		t.Error("makeOverlay of a removed template succeeded")
	}
	if _, ok := s.cloneOf(row2.ID); ok {
		t.Error("a refused overlay left its clone mark")
	}
}
