package qemu

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// runtimeKernel returns the runtime kernel and initramfs for boot tests:
// $BANGER_TEST_KERNEL and $BANGER_TEST_INITRD, else runtime/kernel/ of this
// checkout (built by scripts/make-runtime.sh). It skips when they are
// missing.
func runtimeKernel(t *testing.T) (kernel, initrd string) {
	t.Helper()
	kernel, initrd = os.Getenv("BANGER_TEST_KERNEL"), os.Getenv("BANGER_TEST_INITRD")
	if kernel == "" {
		dir, err := filepath.Abs(filepath.Join("..", "..", "..", "runtime", "kernel"))
		if err != nil {
			t.Fatal(err)
		}
		kernel, initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd.img")
	}
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			testhost.Skip(t, "runtime kernel missing (%v): run scripts/make-runtime.sh or set BANGER_TEST_KERNEL and BANGER_TEST_INITRD", err)
		}
	}
	return kernel, initrd
}

// testSpec returns a TCG spec with an agent channel and a root disk (a
// sparse file the initramfs never mounts) in a fresh folder whose name
// contains a comma, run as a root daemon runs its VMMs (see
// vmmtest.RunAs). The folder is private (0700): QEMU reaches nothing in it
// but through the descriptors the driver passes.
func testSpec(t *testing.T, id string) vmm.Spec {
	kernel, initrd := runtimeKernel(t)
	dir := filepath.Join(t.TempDir(), "vm,1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.ext4")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID:         id,
		Name:       id,
		Dir:        dir,
		CPUs:       1,
		MemoryMiB:  256,
		Kernel:     kernel,
		Initrd:     initrd,
		KernelArgs: "console=ttyS0 reboot=k panic=1",
		Disk:       disk,
		ConsoleLog: filepath.Join(dir, "console.log"),
		Accel:      "tcg",
		Agent:      true,
		RunAs:      vmmtest.RunAs(t),
	}
}

// waitConsole waits until the console log shows want after its first
// skip bytes.
func waitConsole(t *testing.T, path string, skip int, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if len(b) > skip && strings.Contains(string(b[skip:]), want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("console never showed %q within %v; it ends with:\n%s", want, timeout, lastLines(string(b), 2000))
}

func TestDriverLifecycle(t *testing.T) {
	qemuBinary(t)
	spec := testSpec(t, "lifecycle")
	// A stale socket from a crashed run: must be removed, not refused.
	stale, err := net.Listen("unix", QMPSocket(spec.Dir))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	log, logs := vmmtest.Logger(t)
	d := New("", log)
	ctx := context.Background()
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (launch to QMP ready): %v", time.Since(t0).Round(time.Millisecond))
	vmmtest.EnsureStopped(t, st)

	if st.Version != vmm.StateVersion || st.Driver != "qemu" || st.PID <= 0 || st.StartTime == 0 ||
		st.ControlSocket != QMPSocket(spec.Dir) || st.AgentSocket != AgentSocket(spec.Dir) ||
		st.ConsoleLog != spec.ConsoleLog || st.Accel != "tcg" || len(st.Argv) == 0 ||
		len(st.Notes) != 1 || !strings.Contains(st.Notes[0], spec.Disk+" (read-write)") {
		t.Fatalf("state = %+v", st)
	}
	if !strings.Contains(strings.Join(st.Argv, " "), "tsc_early_khz=") {
		t.Errorf("tcg argv has no TSC hint: %q", st.Argv)
	}
	if !d.Alive(st) {
		t.Fatal("not alive after Start")
	}
	// Least privilege: its own uid, no capabilities, seccomp, no_new_privs.
	vmmtest.AssertConfined(t, st, spec.RunAs, true)
	if spec.RunAs != nil {
		// Only descriptors: nothing of the VM folder became the VMM's.
		vmmtest.AssertNotOwnedBy(t, spec.Dir, spec.RunAs.UID)
	}
	// QEMU is our child (no -daemonize under its sandbox) in a session of
	// its own, with no environment.
	if p, _ := vmmtest.PPID(st.PID); p != os.Getpid() {
		t.Errorf("qemu %d has parent %d, want the daemon %d", st.PID, p, os.Getpid())
	}
	if env, err := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/environ"); err != nil || len(env) != 0 {
		t.Errorf("qemu environment: %q, %v; want none", env, err)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/cmdline")
	if !strings.Contains(string(cmdline), "banger-lifecycle") {
		t.Errorf("cmdline lacks -name banger-lifecycle: %q", cmdline)
	}
	for _, p := range []string{st.ControlSocket, st.AgentSocket} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	if c, err := net.Dial("unix", st.AgentSocket); err != nil {
		t.Errorf("agent socket does not accept: %v", err)
	} else {
		c.Close()
	}

	// A second Start of the same VM must refuse and leave the first alone.
	if _, err := d.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "answers") {
		t.Fatalf("second Start of a running VM: %v", err)
	}
	if !d.Alive(st) {
		t.Fatal("second Start hurt the running VM")
	}

	// The daemon forgets everything but the persisted State.
	d2 := New("", log)
	st2 := vmmtest.Readopt(t, d2, st)

	waitConsole(t, spec.ConsoleLog, 0, "Run /init as init process", 60*time.Second)

	// This initramfs ignores the ACPI power button, so the graceful request
	// goes unanswered and Stop must escalate to SIGTERM after the timeout.
	const timeout = 2 * time.Second
	t0 = time.Now()
	if err := d2.Stop(ctx, st2, false, timeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(t0)
	t.Logf("Stop (graceful %v, then SIGTERM): %v", timeout, took.Round(time.Millisecond))
	if took > timeout+termWait+killWait+time.Second {
		t.Errorf("Stop took %v", took)
	}
	// The powerdown request itself must have gone through QMP.
	if l := logs.String(); strings.Contains(l, "graceful shutdown request failed") || !strings.Contains(l, "did not shut down in time") {
		t.Errorf("system_powerdown was not delivered; log:\n%s", l)
	}
	vmmtest.AssertStopped(t, d2, st2)

	// Starting again appends to the same console log; a forced stop kills.
	before, _ := os.ReadFile(spec.ConsoleLog)
	st3, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st3)
	waitConsole(t, spec.ConsoleLog, len(before), "Linux version", 30*time.Second)
	t0 = time.Now()
	if err := d.Stop(ctx, st3, true, time.Minute); err != nil {
		t.Fatalf("forced Stop: %v", err)
	}
	t.Logf("forced Stop: %v", time.Since(t0).Round(time.Millisecond))
	after, _ := os.ReadFile(spec.ConsoleLog)
	if len(after) <= len(before) || string(after[:len(before)]) != string(before) {
		t.Errorf("console log was not appended to (%d -> %d bytes)", len(before), len(after))
	}
	vmmtest.AssertStopped(t, d, st3)
}

// TestHelperDaemon is not a test: TestVMMSurvivesDaemonKill runs the test
// binary as a stand-in daemon that starts a VM, prints its State and waits
// to be SIGKILLed.
func TestHelperDaemon(t *testing.T) {
	vmmtest.HelperDaemon(t, func() vmm.Driver { return New("", nil) })
}

func TestVMMSurvivesDaemonKill(t *testing.T) {
	qemuBinary(t)
	spec := testSpec(t, "survivor")
	st, helper := vmmtest.StartInHelper(t, spec)
	vmmtest.KillHelper(helper)

	log, _ := vmmtest.Logger(t)
	d := New("", log)
	if !d.Alive(st) {
		t.Fatal("qemu died with the daemon")
	}
	if p, _ := vmmtest.PPID(st.PID); p == helper.Process.Pid {
		t.Errorf("qemu was not re-parented")
	}
	vmmtest.AssertConfined(t, st, spec.RunAs, true)
	if err := d.Recover(context.Background(), st); err != nil {
		t.Fatalf("Recover after daemon SIGKILL: %v", err)
	}
	if c, err := vmm.DialAgent(context.Background(), d, st); err != nil {
		t.Errorf("agent socket after daemon SIGKILL: %v", err)
	} else {
		c.Close()
	}
	if err := d.Stop(context.Background(), st, true, time.Second); err != nil {
		t.Fatal(err)
	}
	vmmtest.AssertStopped(t, d, st)
}

func TestStartErrors(t *testing.T) {
	qemuBinary(t)
	ctx := context.Background()
	log, _ := vmmtest.Logger(t)
	d := New("", log)

	// leftOnly fails unless dir holds only the files named.
	leftOnly := func(t *testing.T, dir string, names ...string) {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			ok := false
			for _, n := range names {
				ok = ok || e.Name() == n
			}
			if !ok {
				t.Errorf("left behind: %s", e.Name())
			}
		}
	}

	t.Run("missing tap", func(t *testing.T) {
		spec := testSpec(t, "badtap")
		spec.TAP = "bgnosuchtap0"
		spec.MAC = "52:54:00:00:00:01"
		_, err := d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), `open tap "bgnosuchtap0"`) {
			t.Fatalf("Start with a missing tap: %v", err)
		}
		t.Logf("error: %v", err)
		leftOnly(t, spec.Dir, "console.log", "disk.ext4")
	})

	t.Run("qemu refuses", func(t *testing.T) {
		// A kernel QEMU cannot load: it exits, and its own message is in
		// the error.
		spec := testSpec(t, "junk")
		spec.Kernel = filepath.Join(spec.Dir, "junk")
		os.WriteFile(spec.Kernel, []byte("not a kernel"), 0o644)
		_, err := d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "qemu-system-x86_64 exited before its QMP socket answered") ||
			!strings.Contains(err.Error(), OutFileName+") ends with:\nqemu") {
			t.Fatalf("err = %v, want qemu's exit and its output", err)
		}
		t.Logf("error: %v", err)
		leftOnly(t, spec.Dir, "console.log", "disk.ext4", "junk", OutFileName)
	})

	vmmtest.StartRefusals(t, vmmtest.Refusals{Driver: d, Spec: testSpec, Control: QMPSocket, Agent: AgentSocket,
		WithBinary: func(bin string) vmm.Driver { return New(bin, log) }})

	t.Run("kvm the vmm user cannot open", func(t *testing.T) {
		spec := testSpec(t, "nokvm")
		if spec.RunAs == nil {
			testhost.Skip(t, "needs root: the daemon's own user runs the VMM")
		}
		fi, err := os.Stat("/dev/kvm")
		if err != nil || fi.Mode().Perm()&0o066 != 0 {
			t.Skipf("/dev/kvm is missing or open to others (%v)", err)
		}
		spec.Accel = "kvm"
		_, err = d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "cannot open /dev/kvm") || !strings.Contains(err.Error(), "chmod 0660 /dev/kvm") {
			t.Fatalf("err = %v, want one naming /dev/kvm and the fix", err)
		}
	})

	t.Run("invalid spec", func(t *testing.T) {
		spec := testSpec(t, "inv")
		spec.Kernel = filepath.Join(spec.Dir, "nope")
		spec.Accel = "hvf"
		spec.CPUs = 0
		spec.TAP = "tap0"
		_, err := d.Start(ctx, spec)
		if err == nil {
			t.Fatal("invalid spec accepted")
		}
		for _, want := range []string{"kernel", "hvf", "cpus", "mac"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	})

	t.Run("binary by name", func(t *testing.T) {
		for _, bin := range []string{"", DefaultBinary} {
			p, err := New(bin, nil).Binary()
			if err != nil || !filepath.IsAbs(p) {
				t.Errorf("Binary() for %q = %q, %v", bin, p, err)
			}
		}
		if _, err := New("no-such-qemu-xyz", nil).Binary(); err == nil || !strings.Contains(err.Error(), "apt-get install qemu-system-x86") {
			t.Errorf("unknown name: %v", err)
		}
	})
}
