package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// memfd is a memfd of size bytes, closed with the test.
func memfd(t *testing.T, size int64) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("test-template", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

func sum(t *testing.T, f *os.File) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<40)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestSaveAndLoadState: a VM whose RAM is a shared memfd is saved (device
// state only); two clones map the sealed memfd privately, load the state
// and run on (as the VMM user: the seal, not the file mode, keeps them
// from writing it), each on a qcow2 overlay of the template's disk, and
// QEMU prints nothing (no image locking complaint); the memfd and the
// template's disk are unchanged afterwards.
func TestSaveAndLoadState(t *testing.T) {
	qemuBinary(t)
	ctx := context.Background()
	spec := testSpec(t, "template")
	mem := memfd(t, int64(spec.MemoryMiB)<<20)
	spec.MemoryFile, spec.MemoryShared = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), mem.Fd()), true
	d := New("", nil)
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	waitConsole(t, spec.ConsoleLog, 0, "Run /init as init process", 90*time.Second)
	state := filepath.Join(t.TempDir(), "state")
	f, err := os.Create(state)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = d.SaveState(ctx, st, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(state)
	t.Logf("SaveState: %d bytes in %v", fi.Size(), time.Since(t0).Round(time.Millisecond))
	if fi.Size() == 0 || fi.Size() > 4<<20 {
		t.Errorf("state file of %d bytes: want the device state only", fi.Size())
	}
	if err := d.Stop(ctx, st, true, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		t.Fatal(err)
	}
	before := sum(t, mem)
	if err := os.Chmod(spec.Disk, 0o400); err != nil {
		t.Fatal(err)
	}
	diskSum := fileSHA(t, spec.Disk)

	for i := range 2 {
		c := testSpec(t, fmt.Sprintf("clone-%d", i))
		c.MemoryFile = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), mem.Fd())
		c.IncomingState = state
		c.Disk, c.DiskBacking = filepath.Join(c.Dir, "disk.qcow2"), spec.Disk
		if err := d.CreateOverlay(ctx, c.Disk, spec.Disk, 64<<20); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		cst, err := d.Start(ctx, c)
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		vmmtest.EnsureStopped(t, cst)
		t.Logf("clone %d: launch to running %v", i, time.Since(t0).Round(time.Millisecond))
		q, err := DialQMP(ctx, cst.ControlSocket, qmpTimeout)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := q.Execute(ctx, "query-status", nil)
		q.Close()
		var status struct{ Status string }
		json.Unmarshal(raw, &status)
		if err != nil || status.Status != "running" {
			t.Errorf("clone %d: status %q, %v; want running", i, status.Status, err)
		}
		if out := readFile(OutFile(c.Dir)); out != "" {
			t.Errorf("clone %d: qemu printed: %s", i, out)
		}
		guestWrite(t, cst, 0x60+i)
		time.Sleep(time.Second)
		if !d.Alive(cst) {
			t.Errorf("clone %d died after its start: %s", i, lastLines(readFile(OutFile(c.Dir)), 2000))
		}
	}
	if sum(t, mem) != before {
		t.Error("the clones changed the template's memory")
	}
	if fileSHA(t, spec.Disk) != diskSum {
		t.Error("the clones changed the template's disk")
	}
}

// TestMachineKey: per-VM parts leave the key alone; the machine's parts
// change it.
func TestMachineKey(t *testing.T) {
	qemuBinary(t)
	kernel, initrd := runtimeKernel(t)
	base := vmm.Spec{ID: "a", Name: "a", Dir: "/a", CPUs: 1, MemoryMiB: 256, Kernel: kernel, Initrd: initrd,
		KernelArgs: "console=ttyS0", Disk: "/a/disk", DetachedNIC: true, MAC: "52:54:00:00:00:01",
		ConsoleLog: "/a/console.log", Accel: "tcg", Agent: true, MemoryFile: "/proc/1/fd/3", MemoryShared: true}
	d := New("", nil)
	key := func(s vmm.Spec) string {
		k, err := d.MachineKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k0 := key(base)
	clone := base
	clone.ID, clone.Name, clone.Dir, clone.Disk, clone.ConsoleLog = "b", "b", "/b", "/b/disk", "/b/console.log"
	clone.DetachedNIC, clone.TAP, clone.MAC = false, "tap-b", "52:54:00:00:00:02"
	clone.KernelArgs, clone.MemoryShared, clone.IncomingState = "console=ttyS0 banger.ip=1.2.3.4/24", false, "/t/state"
	clone.RunAs = &vmm.Identity{UID: 5, GID: 5}
	clone.Disk, clone.DiskBacking = "/b/disk.qcow2", "/t/disk.ext4"
	if key(clone) != k0 {
		t.Error("per-VM parts change the machine key")
	}
	for name, mod := range map[string]func(*vmm.Spec){
		"accel":   func(s *vmm.Spec) { s.Accel = "kvm" },
		"cpus":    func(s *vmm.Spec) { s.CPUs = 2 },
		"memory":  func(s *vmm.Spec) { s.MemoryMiB = 512 },
		"agent":   func(s *vmm.Spec) { s.Agent = false },
		"no disk": func(s *vmm.Spec) { s.Disk = "" },
		"kernel":  func(s *vmm.Spec) { s.Kernel = initrd },
	} {
		s := base
		mod(&s)
		if key(s) == k0 {
			t.Errorf("%s: the machine key does not change", name)
		}
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
