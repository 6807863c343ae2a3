package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/qemu"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// runtimeDir is the runtime bundle of this checkout (built by
// scripts/make-runtime.sh), or $BANGER_TEST_RUNTIME.
func runtimeDir(t *testing.T) string {
	if d := os.Getenv("BANGER_TEST_RUNTIME"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "..", "runtime"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// kvmRunsGuests reports whether KVM can run a guest here, and why not. It
// takes the answer from the daemon's accelerator probe cache or from this
// test's own cache (in the temporary folder), and otherwise boots the
// runtime kernel under QEMU with KVM (qemu.ProbeAccel) and caches that.
// /dev/kvm can exist where KVM guests hang (nested virtualization), so its
// presence proves nothing.
func kvmRunsGuests(t *testing.T, kernel, initrd string) (bool, string) {
	kvm, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("/dev/kvm cannot be opened read-write (%v)", err)
	}
	kvm.Close()
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			return false, fmt.Sprintf("whether KVM runs guests is unknown: no runtime kernel to probe with (%v; run scripts/make-runtime.sh)", err)
		}
	}
	var caches []string
	if dirs, err := paths.Resolve(); err == nil {
		caches = append(caches, filepath.Join(dirs.State, "accel-probe.json")) // the daemon's
	}
	caches = append(caches, filepath.Join(os.TempDir(), "banger-test-accel-probe.json"))
	for i, c := range caches {
		// Only the last (this test's own) cache may be filled by a boot.
		a := qemu.KVMProbe{Kernel: kernel, Initrd: initrd, Cache: c, Timeout: 8 * time.Second, Boot: i == len(caches)-1}.Run(context.Background())
		switch {
		case a.Err != nil:
			return false, fmt.Sprintf("whether KVM runs guests is unknown: the probe could not run (%v)", a.Err)
		case !a.Known:
			continue
		case a.Result.OK:
			return true, "KVM runs guests (probe cached in " + c + ")"
		}
		return false, fmt.Sprintf("KVM cannot run guests here: a KVM boot probe failed, %s (cached in %s)", a.Result.Why(), c)
	}
	return false, "whether KVM runs guests is unknown"
}

// TestRealFirecracker boots the runtime kernel under a real Firecracker. It
// runs only where a firecracker binary exists (runtime bundle or $PATH)
// and KVM can run guests, and otherwise skips naming what is missing (fails
// under BANGER_REQUIRE_FIRECRACKER=1, as `make test-firecracker` sets).
func TestRealFirecracker(t *testing.T) {
	t.Parallel() // a KVM probe that times out takes seconds
	rt := runtimeDir(t)
	kernel, initrd := filepath.Join(rt, "kernel", "vmlinux"), filepath.Join(rt, "kernel", "initrd.img")
	bin, binErr := FindBinary(rt)
	kvmOK, kvmWhy := kvmRunsGuests(t, kernel, initrd)
	var missing []string
	if binErr != nil {
		missing = append(missing, "no firecracker binary ("+binErr.Error()+")")
	}
	if !kvmOK {
		missing = append(missing, kvmWhy)
	}
	if len(missing) > 0 {
		if os.Getenv("BANGER_REQUIRE_FIRECRACKER") == "1" { // make test-firecracker
			t.Fatalf("real Firecracker test cannot run: %s", strings.Join(missing, "; and "))
		}
		testhost.SkipHardware(t, "real Firecracker test skipped: %s", strings.Join(missing, "; and "))
	}
	t.Logf("firecracker %s; %s", bin, kvmWhy)

	log, logs := vmmtest.Logger(t)
	d := New(bin, log)
	// Jailed, as a root daemon runs it, when the jailer is there: `make
	// test-firecracker` (run as root) requires it.
	jb, jerr := FindJailer(rt)
	switch {
	case jerr == nil && os.Geteuid() == 0:
		d.WithJailer(jb, filepath.Join(shortDir(t), "jail"), false)
		t.Logf("jailed by %s", jb)
	case os.Getenv("BANGER_REQUIRE_FIRECRACKER") == "1":
		t.Fatalf("make test-firecracker runs Firecracker through its jailer, as root: jailer %v, euid %d", jerr, os.Geteuid())
	default:
		t.Logf("not jailed: jailer %v, euid %d", jerr, os.Geteuid())
	}
	ctx := context.Background()
	newSpec := func(id, args string) vmm.Spec {
		dir := shortDir(t)
		return vmm.Spec{
			ID: id, Name: id, Dir: dir, CPUs: 1, MemoryMiB: 256,
			Kernel: kernel, Initrd: initrd, KernelArgs: args,
			ConsoleLog: filepath.Join(dir, "console.log"),
			Agent:      true, VsockCID: 3,
			RunAs: vmmtest.RunAs(t),
		}
	}

	// The probe initramfs prints its marker and resets the guest at once,
	// which ends Firecracker (reboot=k).
	spec := newSpec("real-probe", "console=ttyS0 reboot=k panic=1 "+qemu.ProbeKernelArg)
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	t.Logf("Start: %v", time.Since(t0).Round(time.Millisecond))
	if v, err := NewClient(st.ControlSocket, time.Second).Version(ctx); err == nil {
		t.Logf("firecracker version %s", v)
	}
	waitFor(t, 30*time.Second, "the probe marker on the console", func() bool {
		b, _ := os.ReadFile(spec.ConsoleLog)
		return strings.Contains(string(b), qemu.ProbeMarker)
	})
	t.Logf("InstanceStart to probe marker: %v", time.Since(t0).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "firecracker to exit after the guest reset", func() bool { return !d.Alive(st) })
	if err := d.Stop(ctx, st, false, time.Second); err != nil {
		t.Fatal(err)
	}
	vmmtest.Gone(t, st.ControlSocket, st.AgentSocket)
	if st.Chroot != "" {
		assertJailGone(t, st.Chroot, st.Cgroups)
	}

	// Without the probe argument and without a disk, the initramfs waits
	// 30 s for /dev/vda: time to recover the VM, try the vsock device and
	// stop it gracefully (ctrl-alt-del; the initramfs leaves the kernel's
	// immediate reboot on ctrl-alt-del in place).
	spec = newSpec("real-stop", "console=ttyS0 reboot=k panic=1")
	if st, err = d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	waitFor(t, 30*time.Second, "the kernel on the console", func() bool {
		b, _ := os.ReadFile(spec.ConsoleLog)
		return strings.Contains(string(b), "Run /init")
	})
	if err := New(bin, log).Recover(ctx, st); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = DialVsock(vctx, st.AgentSocket, 9999)
	cancel()
	if !errors.Is(err, ErrVsockRefused) {
		t.Errorf("vsock to a port nobody listens on: %v, want ErrVsockRefused", err)
	}
	t0 = time.Now()
	if err := d.Stop(ctx, st, false, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful Stop: %v (ctrl-alt-del honoured: %v)", time.Since(t0).Round(time.Millisecond),
		strings.Contains(logs.String(), "exited after ctrl-alt-del"))
	if d.Alive(st) {
		t.Fatal("alive after Stop")
	}
	vmmtest.Gone(t, st.ControlSocket, st.AgentSocket)
	if st.Chroot != "" {
		assertJailGone(t, st.Chroot, st.Cgroups)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
