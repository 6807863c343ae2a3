package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
	"github.com/bangerhq/banger/internal/vmm/proc"
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

// fakeBinary builds fcsim's fake-firecracker once per test binary, with the
// specification's path compiled in, and returns its path. It skips when the
// specification is absent.
func fakeBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BANGER_FC_TEST_BIN"); p != "" { // in a helper process
		return p
	}
	loadSpec(t)
	fake.once.Do(func() {
		specPath, err := fcspec.Find(".")
		if err != nil {
			fake.err = err
			return
		}
		if fake.dir, fake.err = os.MkdirTemp("", "fake-fc"); fake.err != nil {
			return
		}
		fake.bin = filepath.Join(fake.dir, "fake-firecracker")
		t0 := time.Now()
		cmd := exec.Command("go", "build", "-o", fake.bin, "-ldflags", "-X main.specFile="+specPath,
			"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim/cmd/fake-firecracker")
		if out, err := cmd.CombinedOutput(); err != nil {
			fake.err = fmt.Errorf("build fake-firecracker: %v\n%s", err, out)
			return
		}
		t.Logf("built fake-firecracker in %v", time.Since(t0).Round(time.Millisecond))
	})
	if fake.err != nil {
		t.Fatal(fake.err)
	}
	return fake.bin
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
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return w.b.Write(p)
}

func (w *logBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// testSpec returns a spec for the simulator in a fresh short folder, with
// a placeholder kernel and disk (the simulator only opens them), a TAP
// name (not created: the simulator does not open it), and a vsock device.
func testSpec(t *testing.T, id string) vmm.Spec {
	dir := shortDir(t)
	for _, f := range []string{"vmlinux", "initrd.img", "disk.ext4"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("placeholder"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return vmm.Spec{
		ID: id, Name: id, Dir: dir,
		CPUs: 2, MemoryMiB: 256,
		Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.img"),
		KernelArgs:  "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
		Disk:        filepath.Join(dir, "disk.ext4"),
		TAP:         "tap-" + id,
		MAC:         "52:54:00:00:00:01",
		ConsoleLog:  filepath.Join(dir, "console.log"),
		AgentSocket: filepath.Join(dir, "agent.sock"),
		VsockCID:    3,
		OwnerUID:    -1, OwnerGID: -1,
	}
}

// ensureStopped kills whatever st describes at test end, so a failing test
// leaves no process behind.
func ensureStopped(t *testing.T, st vmm.State) {
	t.Cleanup(func() {
		if proc.Alive(st.PID, st.StartTime) {
			t.Logf("cleanup: killing leftover firecracker %d", st.PID)
			proc.Signal(st.PID, st.StartTime, syscall.SIGKILL)
		}
	})
}

func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return f[0][0], n, true
}

// processesUsing returns the pids whose command line contains s.
func processesUsing(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), s) {
			if st, _, ok := procStat(pid); ok && st != 'Z' {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func gone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

func TestDriverLifecycle(t *testing.T) {
	bin := fakeBinary(t)
	spec := testSpec(t, "lifecycle")
	// A stale socket from a crashed run: removed, not refused.
	stale, err := net.Listen("unix", APISocket(spec.Dir))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	log, logs := testLogger(t)
	d := New(bin, log)
	ctx := context.Background()
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (launch to InstanceStart answered): %v", time.Since(t0).Round(time.Millisecond))
	ensureStopped(t, st)

	want := vmm.State{
		Version: vmm.StateVersion, Driver: "firecracker", PID: st.PID, StartTime: st.StartTime,
		ControlSocket: APISocket(spec.Dir), AgentSocket: spec.AgentSocket, ConsoleLog: spec.ConsoleLog,
		TAP: spec.TAP, Accel: "kvm", Argv: Argv(bin, spec), VsockCID: 3,
	}
	if st.PID <= 0 || st.StartTime == 0 || fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("state\n got %+v\nwant %+v", st, want)
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
	for _, p := range []string{st.ControlSocket, st.AgentSocket} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	console, _ := os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(console), "kernel command line: console=ttyS0 reboot=k panic=1 root=/dev/vda rw root=/dev/vda rw") {
		t.Errorf("console lacks the simulated boot line:\n%s", console)
	}
	fclog, _ := os.ReadFile(LogFile(spec.Dir))
	for _, req := range ConfigRequests(spec) {
		if !strings.Contains(string(fclog), fmt.Sprintf("%s request on %q", req.Method, req.Path)) {
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
	b, _ := json.Marshal(st)
	var st2 vmm.State
	if err := json.Unmarshal(b, &st2); err != nil {
		t.Fatal(err)
	}
	d2 := New(bin, log)
	if err := d2.Recover(ctx, st2); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	bogus := st2
	bogus.StartTime++
	if d2.Alive(bogus) {
		t.Fatal("state with a wrong start time reported alive")
	}
	if err := d2.Recover(ctx, bogus); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Recover with a wrong start time: %v, want ErrNotRunning", err)
	}
	other := st2
	other.Argv = Argv(bin, vmm.Spec{Dir: spec.Dir, ID: "someone-else"})
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
	if d2.Alive(st2) {
		t.Fatal("alive after Stop")
	}
	gone(t, st.ControlSocket, st.AgentSocket, listener)
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Stop removed %s, which is no vsock listener: %v", keep, err)
	}
	console, _ = os.ReadFile(spec.ConsoleLog)
	if !strings.Contains(string(console), "reboot: Restarting system") {
		t.Errorf("console lacks the guest reset:\n%s", console)
	}
	// Reaped by the driver's goroutine: no zombie of ours.
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, ppid, ok := procStat(st.PID)
		if !ok || ppid != os.Getpid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still our child in state %c", st.PID, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d2.Stop(ctx, st2, false, time.Second); err != nil {
		t.Errorf("Stop of a stopped VM: %v", err)
	}
	if err := d2.Recover(ctx, st2); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Recover after Stop: %v, want ErrNotRunning", err)
	}

	// Starting again appends to the console log and keeps the previous
	// firecracker log.
	before, _ := os.ReadFile(spec.ConsoleLog)
	st3, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ensureStopped(t, st3)
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
	if d.Alive(st3) {
		t.Fatal("alive after forced Stop")
	}
	gone(t, st3.ControlSocket, st3.AgentSocket)
}

// TestStopEscalates covers a guest that ignores ctrl-alt-del and a VMM
// that ignores SIGTERM, and Recover on a live VMM whose API is gone.
func TestStopEscalates(t *testing.T) {
	bin := fakeBinary(t)
	ctx := context.Background()
	log, logs := testLogger(t)
	d := New(bin, log)

	t.Setenv("FCSIM_GUEST_IGNORES_CTRL_ALT_DEL", "1")
	spec := testSpec(t, "stubborn")
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ensureStopped(t, st)
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
	gone(t, st.ControlSocket, st.AgentSocket)

	t.Setenv("FCSIM_IGNORE_SIGTERM", "1")
	spec = testSpec(t, "deaf")
	if st, err = d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	ensureStopped(t, st)
	t0 = time.Now()
	if err := d.Stop(ctx, st, true, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("forced Stop of a VMM that ignores SIGTERM: %v", time.Since(t0).Round(time.Millisecond))
	if d.Alive(st) || !strings.Contains(logs.String(), "ignored SIGTERM") {
		t.Fatalf("Stop did not escalate to SIGKILL; log:\n%s", logs.String())
	}
	gone(t, st.ControlSocket, st.AgentSocket)
}

func TestStartChownsSockets(t *testing.T) {
	if os.Getuid() != 0 {
		testhost.Skip(t, "needs root to give files away")
	}
	bin := fakeBinary(t)
	spec := testSpec(t, "owned")
	spec.OwnerUID, spec.OwnerGID = 1000, 1000
	st, err := New(bin, nil).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ensureStopped(t, st)
	defer New(bin, nil).Stop(context.Background(), st, true, 0)
	for _, p := range []string{st.ControlSocket, st.AgentSocket, spec.ConsoleLog, LogFile(spec.Dir), OutFile(spec.Dir)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if s := fi.Sys().(*syscall.Stat_t); s.Uid != 1000 || s.Gid != 1000 {
			t.Errorf("%s owned by %d:%d, want 1000:1000", p, s.Uid, s.Gid)
		}
	}
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "API and vsock sockets") || !strings.Contains(st.Notes[0], "uid 1000") {
		t.Errorf("notes = %q", st.Notes)
	}
	t.Logf("note: %s", st.Notes)
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartErrors(t *testing.T) {
	bin := fakeBinary(t)
	ctx := context.Background()
	log, _ := testLogger(t)
	d := New(bin, log)

	t.Run("config error from the api", func(t *testing.T) {
		// The kernel vanishes after Start checked the spec: Firecracker's
		// own check (the file must open) fails PUT /boot-source.
		spec := testSpec(t, "nokernel")
		wrapper := writeScript(t, spec.Dir, "fc-wrapper", fmt.Sprintf("rm -f %q\nexec %q \"$@\"\n", spec.Kernel, bin))
		_, err := New(wrapper, log).Start(ctx, spec)
		if err == nil {
			t.Fatal("Start with a vanished kernel succeeded")
		}
		t.Logf("error: %v", err)
		var ae *APIError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), "configure boot source") ||
			!strings.Contains(err.Error(), "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)") {
			t.Errorf("error lacks the step or the fault message: %v", err)
		}
		gone(t, APISocket(spec.Dir), spec.AgentSocket)
		if pids := processesUsing(APISocket(spec.Dir)); len(pids) > 0 {
			t.Errorf("processes left running: %v", pids)
		}
	})

	t.Run("firecracker exits at once", func(t *testing.T) {
		spec := testSpec(t, "crash")
		crash := writeScript(t, spec.Dir, "fc-crash", "echo 'Error: Arguments(UnexpectedArgument(\"bogus\"))' >&2\nexit 153\n")
		_, err := New(crash, log).Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "exited before its api socket answered") ||
			!strings.Contains(err.Error(), "UnexpectedArgument") || !strings.Contains(err.Error(), "153") {
			t.Fatalf("err = %v, want one with the exit status and stderr", err)
		}
		t.Logf("error: %v", err)
	})

	t.Run("socket path too long", func(t *testing.T) {
		spec := testSpec(t, "long")
		long := filepath.Join(spec.Dir, strings.Repeat("x", 100))
		if err := os.Mkdir(long, 0o700); err != nil {
			t.Fatal(err)
		}
		spec.Dir = long
		_, err := d.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), APISocket(long)) || !strings.Contains(err.Error(), "limit of 107") {
			t.Fatalf("err = %v, want one naming the socket path and the limit", err)
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
	})

	t.Run("missing binary", func(t *testing.T) {
		spec := testSpec(t, "nobin")
		_, err := New("/nonexistent/firecracker", nil).Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/firecracker") {
			t.Fatalf("err = %v", err)
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
	specJSON := os.Getenv("BANGER_FC_TEST_HELPER")
	if specJSON == "" {
		t.Skip("helper process for TestVMMSurvivesDaemonKill")
	}
	var spec vmm.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	st, err := New(os.Getenv("BANGER_FC_TEST_BIN"), nil).Start(context.Background(), spec)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(st)
	fmt.Println("STATE", string(b))
	select {} // until killed
}

func TestVMMSurvivesDaemonKill(t *testing.T) {
	bin := fakeBinary(t)
	spec := testSpec(t, "survivor")
	sj, _ := json.Marshal(spec)
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$", "-test.v")
	helper.Env = append(os.Environ(), "BANGER_FC_TEST_HELPER="+string(sj), "BANGER_FC_TEST_BIN="+bin)
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
	if _, ppid, _ := procStat(st.PID); ppid != helper.Process.Pid {
		t.Errorf("firecracker's parent is %d, want the helper daemon %d", ppid, helper.Process.Pid)
	}

	// SIGKILL the "daemon": no chance to clean up anything.
	helper.Process.Kill()
	helper.Wait()
	time.Sleep(300 * time.Millisecond)

	log, _ := testLogger(t)
	d := New(bin, log)
	if !d.Alive(st) {
		t.Fatal("firecracker died with the daemon")
	}
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
	if d.Alive(st) {
		t.Fatal("alive after Stop")
	}
	gone(t, st.ControlSocket, st.AgentSocket)
}
