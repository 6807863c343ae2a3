package tui

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

// openPTY returns a pseudo-terminal pair sized 80x24.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, s := testhost.RawPTY(t)
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		t.Fatalf("size pty: %v", err)
	}
	return m, s
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatTicks is utime+stime from /proc/self/stat, in clock ticks.
func procStatTicks() int64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// screenLog collects what the program writes to the terminal.
type screenLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screenLog) waitFor(t *testing.T, from int, text string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		s.mu.Lock()
		found := bytes.Contains(s.buf.Bytes()[from:], []byte(text))
		s.mu.Unlock()
		if found {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%q did not appear on the terminal within %s", text, timeout)
	return 0
}

func (s *screenLog) len() int { s.mu.Lock(); defer s.mu.Unlock(); return s.buf.Len() }

// TestIdleCPUAndLatency runs the real program on a pseudo-terminal with 50
// VMs listed (by the test backend: the figures are the TUI's own), measures
// its CPU use while idle, and how long changes take to reach the screen.
// Set BANGER_TUI_BENCH=1 to run it (it takes ~15 s).
func TestIdleCPUAndLatency(t *testing.T) {
	if os.Getenv("BANGER_TUI_BENCH") == "" {
		t.Skip("set BANGER_TUI_BENCH=1 to measure idle CPU and latency (takes ~15 s)")
	}
	b := seedMany(50)
	master, slave := openPTY(t)
	defer master.Close()
	defer slave.Close()
	var out screenLog
	go func() {
		b := make([]byte, 32<<10)
		for {
			n, err := master.Read(b)
			out.mu.Lock()
			out.buf.Write(b[:n])
			out.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interval := time.Second
	m := New(ctx, Options{Backend: b, PollInterval: interval})
	p := tea.NewProgram(m, programOptions(ctx, tea.WithInput(slave), tea.WithOutput(slave))...)
	done := make(chan error, 1)
	go func() { _, err := p.Run(); done <- err }()
	out.waitFor(t, 0, "VMs: 50, 0 running", 10*time.Second)

	time.Sleep(time.Second) // settle
	const idle = 10 * time.Second
	cpu0, ticks0, wall0 := cpuTime(), procStatTicks(), time.Now()
	bytes0 := out.len()
	time.Sleep(idle)
	cpu, ticks, wall := cpuTime()-cpu0, procStatTicks()-ticks0, time.Since(wall0)
	written := out.len() - bytes0
	pct := 100 * cpu.Seconds() / wall.Seconds()
	t.Logf("idle with 50 VMs, polling every %s, for %s: CPU %s (%.2f%% of a core; /proc/self/stat utime+stime %d ticks), %d bytes written to the terminal",
		interval, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), pct, ticks, written)
	if pct >= 1 {
		t.Errorf("idle CPU %.2f%% of a core, goal < 1%%", pct)
	}

	// An action from the TUI: delete the selected VM (vm-00) and confirm.
	from := out.len()
	start := time.Now()
	master.Write([]byte("d"))
	out.waitFor(t, from, "Delete VM vm-00?", 5*time.Second)
	from = out.len()
	start = time.Now()
	master.Write([]byte("y"))
	out.waitFor(t, from, "VMs: 49", 10*time.Second)
	t.Logf("delete from the TUI: confirm key to the list showing 49 VMs: %s", time.Since(start).Round(time.Millisecond))

	// A change made elsewhere (another client) shows within one poll.
	from = out.len()
	start = time.Now()
	if err := b.DeleteVM(ctx, "vm-49", false); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, from, "VMs: 48", 5*time.Second)
	t.Logf("delete by another client to the list showing 48 VMs: %s (poll interval %s)", time.Since(start).Round(time.Millisecond), interval)

	master.Write([]byte("q"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("q did not quit")
	}
}
