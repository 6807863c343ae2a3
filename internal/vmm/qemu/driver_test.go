package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
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

// testLogger logs through t and keeps a copy of everything logged.
func testLogger(t *testing.T) (*slog.Logger, *logBuf) {
	buf := &logBuf{t: t}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

type logBuf struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (w *logBuf) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *logBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// testSpec returns a TCG spec without disk or network in a fresh folder
// whose name contains a comma, to exercise QEMU option escaping for real.
func testSpec(t *testing.T, id string) vmm.Spec {
	kernel, initrd := runtimeKernel(t)
	dir := filepath.Join(t.TempDir(), "vm,1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID:          id,
		Name:        id,
		Dir:         dir,
		CPUs:        1,
		MemoryMiB:   256,
		Kernel:      kernel,
		Initrd:      initrd,
		KernelArgs:  "console=ttyS0 reboot=k panic=1",
		ConsoleLog:  filepath.Join(dir, "console.log"),
		Accel:       "tcg",
		AgentSocket: filepath.Join(dir, "agent.sock"),
	}
}

// ensureStopped kills whatever st describes at test end, so a failing test
// leaves no QEMU behind.
func ensureStopped(t *testing.T, st vmm.State) {
	t.Cleanup(func() {
		if proc.Alive(st.PID, st.StartTime) {
			t.Logf("cleanup: killing leftover qemu %d", st.PID)
			proc.Signal(st.PID, st.StartTime, syscall.SIGKILL)
		}
	})
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

func ppid(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return n
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

	log, logs := testLogger(t)
	d := New("", log)
	ctx := context.Background()
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (launch to QMP ready): %v", time.Since(t0).Round(time.Millisecond))
	ensureStopped(t, st)

	if st.Version != vmm.StateVersion || st.Driver != "qemu" || st.PID <= 0 || st.StartTime == 0 ||
		st.ControlSocket != QMPSocket(spec.Dir) || st.AgentSocket != spec.AgentSocket ||
		st.ConsoleLog != spec.ConsoleLog || st.Accel != "tcg" || len(st.Argv) == 0 {
		t.Fatalf("state = %+v", st)
	}
	if !strings.Contains(strings.Join(st.Argv, " "), "tsc_early_khz=") {
		t.Errorf("tcg argv has no TSC hint: %q", st.Argv)
	}
	if !d.Alive(st) {
		t.Fatal("not alive after Start")
	}
	// Daemonized: not our child, so it cannot become our zombie.
	if p := ppid(t, st.PID); p == os.Getpid() {
		t.Errorf("qemu %d is a child of the test process", st.PID)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/cmdline")
	if !strings.Contains(string(cmdline), "banger-lifecycle") {
		t.Errorf("cmdline lacks -name banger-lifecycle: %q", cmdline)
	}
	for _, p := range []string{st.ControlSocket, st.AgentSocket, PIDFile(spec.Dir)} {
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
	if _, err := d.Start(ctx, spec); err == nil {
		t.Fatal("second Start of a running VM succeeded")
	} else {
		t.Logf("second Start: %v", err)
	}
	if !d.Alive(st) {
		t.Fatal("second Start hurt the running VM")
	}

	// The daemon forgets everything but the persisted State.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var st2 vmm.State
	if err := json.Unmarshal(b, &st2); err != nil {
		t.Fatal(err)
	}
	d2 := New("", log)
	if !d2.Alive(st2) {
		t.Fatal("fresh driver: not alive")
	}
	if err := d2.Recover(ctx, st2); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	bogus := st2
	bogus.StartTime++
	if d2.Alive(bogus) {
		t.Fatal("state with wrong start time reported alive")
	}
	if err := d2.Recover(ctx, bogus); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Recover with wrong start time: %v, want ErrNotRunning", err)
	}

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
	if d2.Alive(st2) {
		t.Fatal("alive after Stop")
	}
	// The powerdown request itself must have gone through QMP.
	if l := logs.String(); strings.Contains(l, "graceful shutdown request failed") || !strings.Contains(l, "did not shut down in time") {
		t.Errorf("system_powerdown was not delivered; log:\n%s", l)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(st.PID)); err == nil && proc.Alive(st.PID, st.StartTime) {
		t.Fatal("process still there")
	}
	for _, p := range []string{st.ControlSocket, st.AgentSocket, PIDFile(spec.Dir)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	if _, err := os.Stat(spec.ConsoleLog); err != nil {
		t.Errorf("console log removed: %v", err)
	}
	if err := d2.Stop(ctx, st2, false, timeout); err != nil {
		t.Errorf("Stop of a stopped VM: %v", err)
	}
	if err := d2.Recover(ctx, st2); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Recover after Stop: %v, want ErrNotRunning", err)
	}

	// Starting again appends to the same console log.
	before, _ := os.ReadFile(spec.ConsoleLog)
	st3, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ensureStopped(t, st3)
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
}

// TestHelperDaemon is not a test: TestVMMSurvivesDaemonKill runs the test
// binary as a stand-in daemon that starts a VM, prints its State and waits
// to be SIGKILLed.
func TestHelperDaemon(t *testing.T) {
	specJSON := os.Getenv("BANGER_QEMU_TEST_HELPER")
	if specJSON == "" {
		t.Skip("helper process for TestVMMSurvivesDaemonKill")
	}
	var spec vmm.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	st, err := New("", nil).Start(context.Background(), spec)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(st)
	fmt.Println("STATE", string(b))
	select {} // until killed
}

func TestVMMSurvivesDaemonKill(t *testing.T) {
	qemuBinary(t)
	spec := testSpec(t, "survivor")
	sj, _ := json.Marshal(spec)
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$", "-test.v")
	helper.Env = append(os.Environ(), "BANGER_QEMU_TEST_HELPER="+string(sj))
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { helper.Process.Kill(); helper.Wait() })
	var st vmm.State
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "STATE "); ok {
			if err := json.Unmarshal([]byte(s), &st); err != nil {
				t.Fatal(err)
			}
			break
		}
		if strings.HasPrefix(line, "ERR ") {
			t.Fatalf("helper daemon: %s", line)
		}
	}
	if st.PID == 0 {
		t.Fatal("helper daemon printed no state")
	}
	ensureStopped(t, st)

	// SIGKILL the "daemon": no chance to clean up anything.
	helper.Process.Kill()
	helper.Wait()
	time.Sleep(500 * time.Millisecond)

	log, _ := testLogger(t)
	d := New("", log)
	if !d.Alive(st) {
		t.Fatal("qemu died with the daemon")
	}
	if err := d.Recover(context.Background(), st); err != nil {
		t.Fatalf("Recover after daemon SIGKILL: %v", err)
	}
	if err := d.Stop(context.Background(), st, true, time.Second); err != nil {
		t.Fatal(err)
	}
	if d.Alive(st) {
		t.Fatal("alive after forced Stop")
	}
}

func TestStartErrors(t *testing.T) {
	qemuBinary(t)
	ctx := context.Background()
	log, _ := testLogger(t)
	d := New("", log)

	t.Run("bad tap name", func(t *testing.T) {
		spec := testSpec(t, "badtap")
		spec.TAP = "bad:tap" // the kernel refuses ':' in interface names
		spec.MAC = "52:54:00:00:00:01"
		_, err := d.Start(ctx, spec)
		if err == nil {
			t.Fatal("Start with a bad tap succeeded")
		}
		t.Logf("error: %v", err)
		if !strings.Contains(err.Error(), "bad:tap") || !strings.Contains(err.Error(), "tun") {
			t.Errorf("error lacks qemu's stderr about the tap: %v", err)
		}
		entries, _ := os.ReadDir(spec.Dir)
		for _, e := range entries {
			if e.Name() != "console.log" {
				t.Errorf("left behind: %s", e.Name())
			}
		}
	})

	t.Run("socket path too long", func(t *testing.T) {
		spec := testSpec(t, "long")
		long := filepath.Join(spec.Dir, strings.Repeat("x", 100))
		if err := os.Mkdir(long, 0o700); err != nil {
			t.Fatal(err)
		}
		spec.Dir = long
		_, err := d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), QMPSocket(long)) || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
			t.Fatalf("err = %v, want one naming the socket path and XDG_RUNTIME_DIR", err)
		}
	})

	t.Run("socket answers", func(t *testing.T) {
		spec := testSpec(t, "busy")
		l, err := net.Listen("unix", spec.AgentSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "answers") {
			t.Fatalf("err = %v, want a refusal because the socket answers", err)
		}
		if _, err := os.Stat(spec.AgentSocket); err != nil {
			t.Errorf("live socket was removed: %v", err)
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

	t.Run("missing binary", func(t *testing.T) {
		spec := testSpec(t, "nobin")
		_, err := New("/nonexistent/qemu", nil).Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/qemu") {
			t.Fatalf("err = %v", err)
		}
	})
}
