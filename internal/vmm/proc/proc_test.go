package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21 22"
	tests := []struct {
		name      string
		line      string
		state     byte
		startTime uint64
		wantErr   bool
	}{
		{name: "plain", line: "123 (sleep) S" + tail, state: 'S', startTime: 4242},
		{name: "spaces in comm", line: "123 (my prog) R" + tail, state: 'R', startTime: 4242},
		{name: "parens in comm", line: "123 (a) b (c)) Z" + tail, state: 'Z', startTime: 4242},
		{name: "only parens", line: "123 ()) ) S" + tail, state: 'S', startTime: 4242},
		{name: "truncated", line: "123 (sleep) S 1 2 3", wantErr: true},
		{name: "no comm", line: "123 sleep S" + tail, wantErr: true},
		{name: "bad start", line: "123 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 abc", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseStat([]byte(tt.line + "\n"))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseStat(%q) = %+v, want error", tt.line, st)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStat(%q): %v", tt.line, err)
			}
			if st.state != tt.state || st.startTime != tt.startTime {
				t.Fatalf("parseStat(%q) = %c %d, want %c %d", tt.line, st.state, st.startTime, tt.state, tt.startTime)
			}
			if st.cpuTicks != 11+12 { // utime and stime, fields 14 and 15
				t.Fatalf("parseStat(%q): %d CPU ticks, want 23", tt.line, st.cpuTicks)
			}
		})
	}
}

// TestCPUTime: this process's CPU time grows while it computes; a pid
// that does not exist is ErrNoProcess.
func TestCPUTime(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Errorf("CPU time went from %s to %s over 200 ms of computing", before, after)
	}
	if _, err := CPUTime(-1); !errors.Is(err, ErrNoProcess) {
		t.Errorf("CPUTime(-1) = %v, want ErrNoProcess", err)
	}
}

// startSleep starts a child "sleep" and returns it with its start time. The
// child is killed and reaped at cleanup.
func startSleep(t *testing.T, name string) (*exec.Cmd, uint64) {
	t.Helper()
	bin, err := exec.LookPath("sleep")
	if err != nil {
		testhost.Skip(t, "sleep not found in PATH")
	}
	if name != "" {
		// A symlink gives the process a comm with spaces and parentheses.
		link := filepath.Join(t.TempDir(), name)
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
		bin = link
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatalf("StartTime(%d): %v", cmd.Process.Pid, err)
	}
	return cmd, st
}

func TestStartTimeSelf(t *testing.T) {
	a, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 {
		t.Fatal("start time of this process is 0")
	}
	if _, err := StartTime(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("StartTime(huge pid) err = %v, want ErrNoProcess", err)
	}
}

func TestAliveAndKill(t *testing.T) {
	cmd, start := startSleep(t, "sl eep) (x")
	pid := cmd.Process.Pid
	if !Alive(pid, start) {
		t.Fatal("running sleep reported not alive")
	}
	if Alive(pid, start+1) {
		t.Fatal("wrong start time reported alive (pid reuse guard)")
	}
	if Alive(0, 0) || Alive(-1, 0) {
		t.Fatal("non-positive pid reported alive")
	}
	if err := Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie must not count as alive, and WaitExit must
	// return for it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitExit(ctx, pid, start, 10*time.Millisecond); err != nil {
		t.Fatalf("WaitExit on killed child: %v", err)
	}
	if Alive(pid, start) {
		t.Fatal("zombie reported alive")
	}
	if err := Signal(pid, start, syscall.SIGKILL); err != nil {
		t.Fatalf("Signal to zombie: %v", err)
	}
	cmd.Wait()
	if Alive(pid, start) {
		t.Fatal("reaped process reported alive")
	}
	if err := Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("Kill of gone process: %v", err)
	}
	if err := Signal(pid, start, syscall.SIGTERM); err != nil {
		t.Fatalf("Signal of gone process: %v", err)
	}
	if err := WaitExit(ctx, pid, start, 0); err != nil {
		t.Fatalf("WaitExit of gone process: %v", err)
	}
}

func TestSignalChecksIdentity(t *testing.T) {
	cmd, start := startSleep(t, "")
	pid := cmd.Process.Pid
	// A wrong start time must not deliver the signal.
	if err := Signal(pid, start+1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if !Alive(pid, start) {
		t.Fatal("Signal with the wrong start time killed the process")
	}
	if err := Signal(pid, start, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitExit(ctx, pid, start, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWaitExitTimeout(t *testing.T) {
	cmd, start := startSleep(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := WaitExit(ctx, cmd.Process.Pid, start, time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitExit err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("WaitExit took %v past a 150ms deadline", d)
	}
	if !Alive(cmd.Process.Pid, start) {
		t.Fatal("process died")
	}
}

func TestWaitExitNotChild(t *testing.T) {
	// sh starts sleep in the background and exits: the sleep is then not our
	// child (it is reparented), as a daemonized VMM is after a restart.
	pidFile := filepath.Join(t.TempDir(), "pid")
	if err := exec.Command("sh", "-c", "sleep 0.5 & echo $! > "+pidFile).Run(); err != nil {
		testhost.Skip(t, "sh: %v", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatal(err)
	}
	start, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(pid, start) {
		t.Fatal("background sleep not alive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := WaitExit(ctx, pid, start, 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("WaitExit returned %v after a 0.5s sleep ended", d)
	}
	if Alive(pid, start) {
		t.Fatal("still alive after WaitExit")
	}
}

// TestWaitPoll covers the fallback for kernels without pidfd_open.
func TestWaitPoll(t *testing.T) {
	cmd, start := startSleep(t, "")
	pid := cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := waitPoll(ctx, pid, start, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitPoll on a live process: %v", err)
	}
	Kill(pid, syscall.SIGKILL)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := waitPoll(ctx2, pid, start, 10*time.Millisecond); err != nil {
		t.Fatalf("waitPoll on a zombie: %v", err)
	}
}

// lateCtx reports a deadline that has passed while Err is still nil: the
// window between a context's deadline and its timer firing.
type lateCtx struct{ context.Context }

func (lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-10 * time.Millisecond), true }

func TestWaitExitPastDeadlineBeforeTimerFires(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- WaitExit(lateCtx{context.Background()}, cmd.Process.Pid, st, 0) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want deadline exceeded", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("WaitExit blocked past its deadline (negative poll timeout means forever)")
	}
}

// TestHolding finds a process that holds a file open (by descriptor, as a
// VMM holds its disk), not one that holds another file, and not this one.
func TestHolding(t *testing.T) {
	dir := t.TempDir()
	disk, other := filepath.Join(dir, "disk"), filepath.Join(dir, "other")
	for _, p := range []string{disk, other} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hold := func(p string) ID {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command("sleep", "60")
		cmd.ExtraFiles = []*os.File{f}
		if err := cmd.Start(); err != nil {
			testhost.Skip(t, "cannot run sleep: %v", err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		st, err := StartTime(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return ID{PID: cmd.Process.Pid, StartTime: st}
	}
	mine, err := os.Open(disk) // this process's own descriptor is not reported
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	holder := hold(disk)
	hold(other)
	got, err := Holding(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != holder {
		t.Fatalf("Holding(disk) = %v, want [%v]", got, holder)
	}
	// A holder that names the file otherwise (a jailed VMM, by its path in
	// its chroot) is found through that alias only, and only when it is
	// the same file.
	jail := filepath.Join(dir, "jail")
	os.Mkdir(jail, 0o700)
	if err := os.Link(disk, filepath.Join(jail, "rootfs")); err != nil {
		t.Fatal(err)
	}
	jailed := hold(filepath.Join(jail, "rootfs"))
	if got, _ := Holding(disk); len(got) != 1 {
		t.Fatalf("Holding(disk) without the alias = %v, want only %v", got, holder)
	}
	if got, _ := Holding(disk, filepath.Join(jail, "rootfs")); len(got) != 2 || !slices.Contains(got, jailed) {
		t.Fatalf("Holding(disk, alias) = %v, want %v and %v", got, holder, jailed)
	}
	if got, _ := Holding(other, filepath.Join(jail, "rootfs")); len(got) != 1 {
		t.Fatalf("Holding(other, alias of disk) = %v: the alias names another file", got)
	}
	if _, err := Holding(filepath.Join(dir, "missing")); err == nil {
		t.Error("Holding of a missing file: no error")
	}
}

// TestStopAsksAgain: a guest that does not listen at the first ask (here:
// the process exits at the third) is asked again every AskAgain, and Stop
// returns without a signal once it exits; without AskAgain it is asked once
// and, after Timeout, terminated.
func TestStopAsksAgain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		again    time.Duration
		wantAsks int
		wantTerm bool
	}{
		{"asked again", 100 * time.Millisecond, 3, false},
		{"asked once", 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			pid := cmd.Process.Pid
			start, err := StartTime(pid)
			if err != nil {
				t.Fatal(err)
			}
			asks := 0
			err = Stop(context.Background(), pid, start, false, Shutdown{
				Name: "test",
				Ask: func(context.Context) error {
					asks++
					if asks == 3 {
						cmd.Process.Signal(syscall.SIGUSR1) // the guest powers off
					}
					return nil
				},
				AskAgain: tc.again, Timeout: 2 * time.Second, TermWait: time.Second, KillWait: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			<-exited
			if asks != tc.wantAsks {
				t.Errorf("asked %d times, want %d", asks, tc.wantAsks)
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if got := ws.Signaled() && ws.Signal() == syscall.SIGTERM; got != tc.wantTerm {
				t.Errorf("ended by %v, want SIGTERM %v", ws, tc.wantTerm)
			}
		})
	}
}
