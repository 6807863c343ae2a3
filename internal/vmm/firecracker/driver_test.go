package firecracker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/vmlinux"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

var fake struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fake.dir != "" {
		os.RemoveAll(fake.dir)
	}
	os.Exit(code)
}

// Environment of the stand-in daemon of TestVMMSurvivesDaemonKill.
const (
	binEnv    = "BANGER_FC_TEST_BIN"
	devDirEnv = "BANGER_FC_TEST_DEVDIR"
)

// fakeBinary builds fcsim's firecracker-simulator once per test binary, in
// a folder the VMM user can reach (mode 0755), and returns its path. The
// driver's tests run it with its in-process fake guest (FCSIM_GUEST=fake,
// see testDriver): they test the driver, not a boot.
func fakeBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(binEnv); p != "" { // in a helper process
		return p
	}
	fake.once.Do(func() {
		if fake.dir, fake.err = os.MkdirTemp("", "fcsim"); fake.err != nil {
			return
		}
		if fake.err = os.Chmod(fake.dir, 0o755); fake.err != nil {
			return
		}
		fake.bin = filepath.Join(fake.dir, "firecracker-simulator")
		t0 := time.Now()
		// Static, as Firecracker is: the jailed one runs in an empty chroot.
		cmd := exec.Command("go", "build", "-o", fake.bin, "github.com/bangerhq/banger/internal/vmm/firecracker/fcsim/cmd/firecracker-simulator")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fake.err = fmt.Errorf("build firecracker-simulator: %v\n%s", err, out)
			return
		}
		t.Logf("built firecracker-simulator in %v", time.Since(t0).Round(time.Millisecond))
	})
	if fake.err != nil {
		t.Fatal(fake.err)
	}
	return fake.bin
}

// devDir is a folder with a stand-in for /dev/kvm that anyone may open
// (the simulator opens none) and a TUN clone device node anyone may open
// (the simulator opens TAPs through it as Firecracker does): the host's may
// be closed to the VMM user. TestStartErrors covers a device the VMM user
// cannot open.
func devDir(t *testing.T) string {
	if d := os.Getenv(devDirEnv); d != "" {
		return d
	}
	tun := testhost.DevTUN(t)
	d := filepath.Dir(tun)
	p := filepath.Join(d, "kvm")
	os.WriteFile(p, nil, 0o600)
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	return d
}

// testDriver is a driver for the simulator: the simulator binary with its
// fake guest, stand-in devices, and the test's environment passed on (the
// simulator's FCSIM_* settings).
func testDriver(t *testing.T, bin string, log *slog.Logger) *Driver {
	d := New(bin, log)
	dev := devDir(t)
	d.devKVM, d.devTUN = filepath.Join(dev, "kvm"), filepath.Join(dev, "tun")
	d.inheritEnv = true
	t.Setenv("FCSIM_GUEST", "fake")
	t.Setenv("FCSIM_DEV_TUN", d.devTUN)
	return d
}

// testSpec returns a spec for the simulator in a fresh short private
// folder, with a kernel that passes Firecracker's checks (vmlinux.Minimal)
// and an initrd (readable by anyone, as a runtime bundle's are) and disk
// (the daemon's, mode 0600; the simulator only opens them), a TAP owned by
// the VMM user (created for the test, never up), an agent vsock device, and
// the VMM user a root daemon would give it.
func testSpec(t *testing.T, id string) vmm.Spec {
	dir := shortDir(t)
	for f, mode := range map[string]os.FileMode{"vmlinux": 0o644, "initrd.img": 0o644, "disk.ext4": 0o600} {
		data := []byte("placeholder")
		if f == "vmlinux" {
			data = vmlinux.Minimal(true)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	runAs := vmmtest.RunAs(t)
	uid := os.Geteuid()
	if runAs != nil {
		uid = int(runAs.UID)
	}
	return vmm.Spec{
		ID: id, Name: id, Dir: dir,
		CPUs: 2, MemoryMiB: 256,
		Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.img"),
		KernelArgs: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
		Disk:       filepath.Join(dir, "disk.ext4"),
		TAP:        vmmtest.TAP(t, uid),
		MAC:        "52:54:00:00:00:01",
		ConsoleLog: filepath.Join(dir, "console.log"),
		Agent:      true,
		VsockCID:   3,
		RunAs:      runAs,
	}
}

// processesUsing returns the pids of live processes whose command line
// contains s and each of also.
func processesUsing(s string, also ...string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		match := strings.Contains(string(b), s)
		for _, a := range also {
			match = match && strings.Contains(string(b), a)
		}
		if match {
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func TestDriverLifecycle(t *testing.T) {
	bin := fakeBinary(t)
	spec := testSpec(t, "lifecycle")
	// A stale socket from a crashed run: removed, not refused.
	os.Mkdir(JailDir(spec.Dir), 0o700)
	stale, err := net.Listen("unix", APISocket(spec.Dir))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	log, logs := vmmtest.Logger(t)
	d := testDriver(t, bin, log)
	ctx := context.Background()
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (launch to InstanceStart answered): %v", time.Since(t0).Round(time.Millisecond))
	vmmtest.EnsureStopped(t, st)

	argv, files := Argv(bin, spec)
	runAs := vmm.Self()
	if spec.RunAs != nil {
		runAs = *spec.RunAs
	}
	want := vmm.State{
		Version: vmm.StateVersion, Driver: "firecracker", PID: st.PID, StartTime: st.StartTime,
		ControlSocket: APISocket(spec.Dir), AgentSocket: VsockSocket(spec.Dir), ConsoleLog: spec.ConsoleLog,
		TAP: spec.TAP, Accel: "kvm", Argv: argv, VsockCID: 3, RunAs: &runAs,
		Notes: []string{fmt.Sprintf("descriptors: 3=%s, 4=%s, 5=%s, 6=%s", files[0].Path, spec.Kernel, spec.Initrd, spec.Disk)},
	}
	if spec.RunAs != nil {
		want.Notes = append(want.Notes, "not jailed: no jailer was found (see banger doctor)")
	}
	if st.PID <= 0 || st.StartTime == 0 || fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("state\n got %+v\nwant %+v", st, want)
	}
	// It runs as the VMM user, with no environment but what the test
	// passed, and only the jail and the disk are that user's.
	vmmtest.AssertConfined(t, st, spec.RunAs, false)
	if spec.RunAs != nil {
		vmmtest.AssertNotOwnedBy(t, spec.Dir, spec.RunAs.UID, JailDir(spec.Dir), spec.Disk)
		for _, p := range []string{JailDir(spec.Dir), spec.Disk, LogFile(spec.Dir), st.ControlSocket, st.AgentSocket} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != spec.RunAs.UID {
				t.Errorf("%s is owned by uid %d, want the vmm's %d", p, uid, spec.RunAs.UID)
			}
		}
	}
	if fi, err := os.Stat(JailDir(spec.Dir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("jail: %v, %v; want mode 0700", fi, err)
	}
	if !d.Alive(st) {
		t.Fatal("not alive after Start")
	}
	if sid, _ := unix.Getsid(st.PID); sid != st.PID {
		t.Errorf("firecracker is not in a session of its own: sid %d, pid %d", sid, st.PID)
	}
	c := NewClient(st.ControlSocket, time.Second)
	if info, err := c.InstanceInfo(ctx); err != nil || info.State != fcapi.StateRunning || info.ID != spec.ID {
		t.Fatalf("GET / = %+v, %v", info, err)
	}
	console, _ := os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(console), "kernel command line: console=ttyS0 reboot=k panic=1 root=/dev/vda rw pci=off root=/dev/vda rw virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6 virtio_mmio.device=4K@0xc0003000:7\n") {
		t.Errorf("console lacks the simulated boot line:\n%s", console)
	}
	fclog, _ := os.ReadFile(LogFile(spec.Dir))
	for _, req := range ConfigRequests(View(spec)) {
		// PUT /logger is logged before it takes effect: on stdout, the
		// console log.
		where := fclog
		if req.Path == "/logger" {
			where = console
		}
		if !strings.Contains(string(where), fmt.Sprintf("The API server received a %s request on %q", methodName(req.Method), req.Path)) {
			t.Errorf("firecracker.log lacks %s %s:\n%s", req.Method, req.Path, fclog)
		}
	}

	// The guest agent channel: the hybrid vsock handshake through the
	// socket the driver configured.
	conn, err := DialVsock(ctx, st.AgentSocket, fcsim.EchoPort)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "hello guest\n")
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "hello guest\n" {
		t.Errorf("vsock echo = %q, %v", line, err)
	}
	conn.Close()
	if _, err := DialVsock(ctx, st.AgentSocket, 52); !errors.Is(err, ErrVsockRefused) {
		t.Errorf("vsock to a port nobody listens on: %v, want ErrVsockRefused", err)
	} else {
		t.Logf("vsock to an unregistered port: %v", err)
	}

	// A second Start of the same VM must refuse and leave the first alone.
	if _, err := d.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "answers") {
		t.Fatalf("second Start of a running VM: %v", err)
	}
	if !d.Alive(st) {
		t.Fatal("second Start hurt the running VM")
	}

	// The daemon forgets everything but the persisted State.
	d2 := testDriver(t, bin, log)
	st2 := vmmtest.Readopt(t, d2, st)
	other := st2
	other.Argv, _ = Argv(bin, vmm.Spec{Dir: spec.Dir, ID: "someone-else"})
	if err := d2.Recover(ctx, other); err == nil || errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Recover with another instance id: %v", err)
	}

	// A guest-to-host listener socket of the vsock device: Stop removes it.
	listener := st.AgentSocket + "_1024"
	l, err := net.Listen("unix", listener)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	keep := st.AgentSocket + "_notaport"
	os.WriteFile(keep, nil, 0o600)

	t0 = time.Now()
	if err := d2.Stop(ctx, st2, false, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(t0)
	t.Logf("graceful Stop (SendCtrlAltDel): %v", took.Round(time.Millisecond))
	if took > 3*time.Second || !strings.Contains(logs.String(), "exited after the guest shut down") {
		t.Errorf("Stop took %v and did not end through ctrl-alt-del; log:\n%s", took, logs.String())
	}
	vmmtest.AssertStopped(t, d2, st2)
	vmmtest.Gone(t, listener)
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Stop removed %s, which is no vsock listener: %v", keep, err)
	}
	console, _ = os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(console), "reboot: Restarting system") {
		t.Errorf("console lacks the guest reset:\n%s", console)
	}

	// Starting again appends to the console log and keeps the previous
	// firecracker log.
	before, _ := os.ReadFile(spec.ConsoleLog)
	st3, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st3)
	after, _ := os.ReadFile(spec.ConsoleLog)
	if len(after) <= len(before) || string(after[:len(before)]) != string(before) {
		t.Errorf("console log was not appended to (%d -> %d bytes)", len(before), len(after))
	}
	if strings.Count(string(after), "Running Firecracker v1.16.1") != 2 {
		t.Errorf("want one startup line per boot in the console log:\n%s", after)
	}
	if _, err := os.Stat(LogFile(spec.Dir) + ".1"); err != nil {
		t.Errorf("previous firecracker log not kept: %v", err)
	}
	t0 = time.Now()
	if err := d.Stop(ctx, st3, true, time.Minute); err != nil {
		t.Fatalf("forced Stop: %v", err)
	}
	t.Logf("forced Stop: %v", time.Since(t0).Round(time.Millisecond))
	if time.Since(t0) > 2*time.Second {
		t.Errorf("forced Stop took %v", time.Since(t0))
	}
	vmmtest.AssertStopped(t, d, st3)
}

// TestStopEscalates covers a guest that ignores ctrl-alt-del and a VMM
// that ignores SIGTERM, and Recover on a live VMM whose API is gone.
func TestStopEscalates(t *testing.T) {
	bin := fakeBinary(t)
	ctx := context.Background()
	log, logs := vmmtest.Logger(t)
	d := testDriver(t, bin, log)

	t.Setenv("FCSIM_GUEST_IGNORES_CTRL_ALT_DEL", "1")
	spec := testSpec(t, "stubborn")
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	moved := st.ControlSocket + ".moved"
	if err := os.Rename(st.ControlSocket, moved); err != nil {
		t.Fatal(err)
	}
	if err := d.Recover(ctx, st); err == nil || errors.Is(err, vmm.ErrNotRunning) || !strings.Contains(err.Error(), "process alive") {
		t.Errorf("Recover without an api socket: %v, want an error that is not ErrNotRunning", err)
	}
	os.Rename(moved, st.ControlSocket)
	t0 := time.Now()
	if err := d.Stop(ctx, st, false, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop (ctrl-alt-del ignored, then SIGTERM): %v", time.Since(t0).Round(time.Millisecond))
	if d.Alive(st) || !strings.Contains(logs.String(), "did not shut down in time") {
		t.Fatalf("Stop did not escalate to SIGTERM; log:\n%s", logs.String())
	}
	vmmtest.Gone(t, st.ControlSocket, st.AgentSocket)

	t.Setenv("FCSIM_IGNORE_SIGTERM", "1")
	spec = testSpec(t, "deaf")
	if st, err = d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	t0 = time.Now()
	if err := d.Stop(ctx, st, true, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("forced Stop of a VMM that ignores SIGTERM: %v", time.Since(t0).Round(time.Millisecond))
	if d.Alive(st) || !strings.Contains(logs.String(), "ignored SIGTERM") {
		t.Fatalf("Stop did not escalate to SIGKILL; log:\n%s", logs.String())
	}
	vmmtest.Gone(t, st.ControlSocket, st.AgentSocket)
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// scriptDir is a folder for wrapper scripts the VMM user may run (the
// folders t.TempDir makes are private).
func scriptDir(t *testing.T) string {
	d := shortDir(t)
	os.Chmod(d, 0o755)
	return d
}

// methodName is how Firecracker's log names an HTTP method: "Put".
func methodName(m string) string { return m[:1] + strings.ToLower(m[1:]) }

func TestStartErrors(t *testing.T) {
	bin := fakeBinary(t)
	ctx := context.Background()
	log, _ := vmmtest.Logger(t)
	d := testDriver(t, bin, log)
	wrapped := func(script string) *Driver { return testDriver(t, script, log) }

	t.Run("config error from the api", func(t *testing.T) {
		// A kernel only root may read: the daemon opens it, but
		// Firecracker, running as the VMM user, cannot reopen it, and its
		// own check fails PUT /boot-source.
		spec := testSpec(t, "nokernel")
		if spec.RunAs == nil {
			testhost.Skip(t, "needs root: a VMM user other than the kernel's owner")
		}
		if err := os.Chmod(spec.Kernel, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := d.Start(ctx, spec)
		if err == nil {
			vmmtest.EnsureStopped(t, st)
			t.Fatal("Start with a kernel the VMM cannot read succeeded")
		}
		t.Logf("error: %v", err)
		var ae *APIError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), "configure boot source") ||
			!strings.Contains(err.Error(), "Boot source error: The kernel file cannot be opened: Permission denied (os error 13)") {
			t.Errorf("error lacks the step or the fault message: %v", err)
		}
		vmmtest.Gone(t, APISocket(spec.Dir), VsockSocket(spec.Dir))
		// This test binary's simulator: another run of these tests on the
		// host (another checkout's) starts processes with the same id.
		if pids := processesUsing(bin+"\x00", "--id\x00"+spec.ID); len(pids) > 0 {
			t.Errorf("processes left running: %v", pids)
		}
	})

	t.Run("firecracker exits at once", func(t *testing.T) {
		spec := testSpec(t, "crash")
		crash := writeScript(t, scriptDir(t), "fc-crash", "echo 'Error: Arguments(UnexpectedArgument(\"bogus\"))' >&2\nexit 153\n")
		_, err := wrapped(crash).Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "exited before its api socket answered") ||
			!strings.Contains(err.Error(), "UnexpectedArgument") || !strings.Contains(err.Error(), "153") {
			t.Fatalf("err = %v, want one with the exit status and stderr", err)
		}
		t.Logf("error: %v", err)
	})

	t.Run("devices the vmm user cannot open", func(t *testing.T) {
		spec := testSpec(t, "nodev")
		if spec.RunAs == nil {
			testhost.Skip(t, "needs root: the daemon's own user runs the VMM")
		}
		closed := filepath.Join(t.TempDir(), "kvm")
		os.WriteFile(closed, nil, 0o600)
		dd := testDriver(t, bin, log)
		dd.devKVM = closed
		_, err := dd.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "cannot open "+closed) || !strings.Contains(err.Error(), "mode 0600") {
			t.Fatalf("err = %v, want one naming the device and its mode", err)
		}
		if _, err := os.Stat(JailDir(spec.Dir)); err == nil {
			t.Error("the jail was made for a VM that cannot start")
		}
	})

	vmmtest.StartRefusals(t, vmmtest.Refusals{Driver: d, Spec: testSpec, Control: APISocket, Agent: VsockSocket,
		WithBinary: func(bin string) vmm.Driver { return testDriver(t, bin, log) }})

	t.Run("a kernel firecracker cannot boot", func(t *testing.T) {
		spec := testSpec(t, "bzimage")
		bz := make([]byte, 8192)
		copy(bz[0x1fe:], []byte{0x55, 0xaa, 0xeb, 0x66, 'H', 'd', 'r', 'S'})
		if err := os.WriteFile(spec.Kernel, bz, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "a bzImage") || !strings.Contains(err.Error(), "uncompressed ELF vmlinux") {
			t.Fatalf("err = %v, want one saying the kernel is a bzImage and what firecracker needs", err)
		}
		t.Logf("error: %v", err)
		if _, err := os.Stat(JailDir(spec.Dir)); err == nil {
			t.Error("the jail was made for a VM that cannot start")
		}
	})

	t.Run("invalid spec", func(t *testing.T) {
		spec := testSpec(t, "inv")
		spec.ID = "bad_id"
		spec.Kernel = filepath.Join(spec.Dir, "nope")
		spec.CPUs = 0
		spec.VsockCID = 2
		spec.MAC = ""
		_, err := d.Start(ctx, spec)
		if err == nil {
			t.Fatal("invalid spec accepted")
		}
		for _, want := range []string{"bad_id", "kernel", "cpus", "vsock cid 2", "mac"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		spec = testSpec(t, "noagent")
		spec.Agent = false
		if _, err := d.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "the vsock device is the agent's") {
			t.Errorf("vsock without the agent: %v", err)
		}
	})
}

func TestFindBinary(t *testing.T) {
	rt := t.TempDir()
	pathDir := t.TempDir()
	t.Setenv("PATH", pathDir)

	_, err := FindBinary(rt)
	bundled := filepath.Join(rt, "firecracker", "firecracker")
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), bundled) || !strings.Contains(err.Error(), "$PATH") {
		t.Fatalf("nothing installed: %v, want exec.ErrNotFound naming %s and $PATH", err, bundled)
	}
	if _, err := FindBinary(""); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("no bundle, nothing in PATH: %v", err)
	}

	inPath := writeScript(t, pathDir, "firecracker", "exit 0\n")
	if p, err := FindBinary(rt); err != nil || p != inPath {
		t.Fatalf("FindBinary = %q, %v, want %s", p, err, inPath)
	}
	if p, err := New("", nil).Binary(); err != nil || p != inPath {
		t.Fatalf("Binary() = %q, %v, want %s", p, err, inPath)
	}

	os.MkdirAll(filepath.Dir(bundled), 0o755)
	os.WriteFile(bundled, []byte("#!/bin/sh\n"), 0o644)
	if _, err := FindBinary(rt); err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Fatalf("non-executable bundle binary: %v", err)
	}
	os.Chmod(bundled, 0o755)
	if p, err := FindBinary(rt); err != nil || p != bundled {
		t.Fatalf("FindBinary = %q, %v, want the bundle's %s", p, err, bundled)
	}
}

// TestHelperDaemon is not a test: TestVMMSurvivesDaemonKill runs the test
// binary as a stand-in daemon that starts a VM, prints its State and waits
// to be SIGKILLed.
func TestHelperDaemon(t *testing.T) {
	vmmtest.HelperDaemon(t, func() vmm.Driver { return testDriver(t, os.Getenv(binEnv), nil) })
}

func TestVMMSurvivesDaemonKill(t *testing.T) {
	bin := fakeBinary(t)
	spec := testSpec(t, "survivor")
	st, helper := vmmtest.StartInHelper(t, spec, binEnv+"="+bin, devDirEnv+"="+devDir(t))
	vmmtest.KillHelper(helper)

	log, _ := vmmtest.Logger(t)
	d := testDriver(t, bin, log)
	if !d.Alive(st) {
		t.Fatal("firecracker died with the daemon")
	}
	vmmtest.AssertConfined(t, st, spec.RunAs, false)
	if err := d.Recover(context.Background(), st); err != nil {
		t.Fatalf("Recover after daemon SIGKILL: %v", err)
	}
	conn, err := DialVsock(context.Background(), st.AgentSocket, fcsim.EchoPort)
	if err != nil {
		t.Fatalf("vsock after daemon SIGKILL: %v", err)
	}
	conn.Close()
	if err := d.Stop(context.Background(), st, false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	vmmtest.AssertStopped(t, d, st)
}
