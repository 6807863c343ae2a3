package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// backingDisk is a raw disk of 4 MiB of 0x11 bytes, mode 0400, as a
// template's disk is.
func backingDisk(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.ext4")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0x11}, 4<<20), 0o400); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func needQemuImg(t *testing.T, d *Driver) {
	t.Helper()
	if _, err := d.imgBinary(); err != nil {
		testhost.Skip(t, "%v", err)
	}
}

// guestWrite writes 64 KiB of byte pat at offset 0 of the VM's disk
// through its virtio-blk device's own block backend (HMP qemu-io -d,
// through QMP), as the guest would.
func guestWrite(t *testing.T, st vmm.State, pat int) {
	t.Helper()
	if out := qemuIO(t, st, fmt.Sprintf("write -P 0x%x 0 64k", pat)); out != "" {
		t.Fatalf("qemu-io write: %q", out)
	}
}

// qemuIO runs a qemu-io command on the disk device of the VM in st (HMP
// qemu-io, through QMP) and returns the errors it printed.
func qemuIO(t *testing.T, st vmm.State, cmd string) string {
	t.Helper()
	ctx := context.Background()
	q, err := DialQMP(ctx, st.ControlSocket, qmpTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	raw, err := q.Execute(ctx, "human-monitor-command", map[string]string{"command-line": fmt.Sprintf("qemu-io -d /machine/peripheral-anon/device[0] %q", cmd)})
	if err != nil {
		t.Fatalf("qemu-io %q: %v", cmd, err)
	}
	var out string
	json.Unmarshal(raw, &out)
	return out
}

// TestCreateOverlay: qemu-img makes a qcow2 overlay of the given size
// that names its backing file; an existing path is refused and left as
// it was; a failing qemu-img leaves no overlay.
func TestCreateOverlay(t *testing.T) {
	d := New("", nil)
	needQemuImg(t, d)
	ctx := context.Background()
	backing := backingDisk(t)
	ov := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := d.CreateOverlay(ctx, ov, backing, 8<<20); err != nil {
		t.Fatal(err)
	}
	img, _ := d.imgBinary()
	out, err := exec.Command(img, "info", "--output=json", "-U", ov).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Format        string `json:"format"`
		VirtualSize   int64  `json:"virtual-size"`
		BackingFile   string `json:"backing-filename"`
		BackingFormat string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != 8<<20 || info.BackingFile != backing || info.BackingFormat != "raw" {
		t.Errorf("qemu-img info: %+v, want qcow2 of 8 MiB backed by raw %s", info, backing)
	}
	if fi, _ := os.Stat(ov); fi.Mode().Perm() != 0o600 {
		t.Errorf("overlay mode %v, want 0600", fi.Mode().Perm())
	}
	before := fileSHA(t, ov)
	if err := d.CreateOverlay(ctx, ov, backing, 8<<20); err == nil {
		t.Error("CreateOverlay over an existing file succeeded")
	}
	if fileSHA(t, ov) != before {
		t.Error("CreateOverlay changed the existing file it refused")
	}
	bad := filepath.Join(t.TempDir(), "nope", "disk.qcow2")
	if err := d.CreateOverlay(ctx, bad, backing, 8<<20); err == nil {
		t.Error("CreateOverlay in a missing folder succeeded")
	}
	if err := d.CreateOverlay(ctx, filepath.Join(t.TempDir(), "x.qcow2"), "relative", 8<<20); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("CreateOverlay of a relative backing: %v, want a clear error", err)
	}
}

// TestOverlayDisk: two VMs run at once on overlays of one read-only
// backing disk (its own descriptor, read-only): each reads the backing's
// bytes through its overlay and its own writes back, neither sees the
// other's, QEMU prints no locking complaint, and the backing file is
// unchanged afterwards.
func TestOverlayDisk(t *testing.T) {
	qemuBinary(t)
	d := New("", nil)
	needQemuImg(t, d)
	ctx := context.Background()
	backing := backingDisk(t)
	sum := fileSHA(t, backing)
	var sts []vmm.State
	var specs []vmm.Spec
	for i := range 2 {
		spec := testSpec(t, fmt.Sprintf("ov-%d", i))
		spec.Disk, spec.DiskBacking = filepath.Join(spec.Dir, "disk.qcow2"), backing
		if err := d.CreateOverlay(ctx, spec.Disk, backing, 4<<20); err != nil {
			t.Fatal(err)
		}
		st, err := d.Start(ctx, spec)
		if err != nil {
			t.Fatalf("overlay %d: %v", i, err)
		}
		vmmtest.EnsureStopped(t, st)
		sts, specs = append(sts, st), append(specs, spec)
	}
	for i, st := range sts {
		guestWrite(t, st, 0x50+i)
	}
	for i, st := range sts {
		if err := d.Stop(ctx, st, true, 0); err != nil {
			t.Fatal(err)
		}
		if out := readFile(OutFile(specs[i].Dir)); strings.Contains(out, "lock") {
			t.Errorf("overlay %d: qemu printed: %s", i, out)
		}
	}
	if fileSHA(t, backing) != sum {
		t.Error("the VMs changed their backing disk")
	}
	// Each overlay holds its own write over the backing's bytes.
	io, err := exec.LookPath("qemu-io")
	if err != nil {
		testhost.Skip(t, "qemu-io not installed (apt-get install qemu-utils)")
	}
	for i, spec := range specs {
		out, err := exec.Command(io, "-r", "-c", fmt.Sprintf("read -P 0x%x 0 64k", 0x50+i), "-c", "read -P 0x11 64k 64k", "-c", "read -P 0x11 1M 64k", spec.Disk).CombinedOutput()
		if err != nil || strings.Contains(string(out), "fail") || strings.Count(string(out), "65536/65536") != 3 {
			t.Errorf("overlay %d afterwards: %v\n%s", i, err, out)
		}
	}
}
