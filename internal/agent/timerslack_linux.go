package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TimerSlack is the timer slack the guest agent runs with (SetTimerSlack).
//
// Why: while any goroutine runs, Go's runtime monitor thread (sysmon)
// wakes every 20 µs for its first 50 rounds, then backs off. Every request
// the agent serves starts such a burst. Under TCG each of those guest timer
// wake-ups costs the emulated vCPU a timer interrupt, two context switches
// and a reprogrammed timer, and QEMU a notification of its main loop from
// the vCPU thread (an eventfd write and a host context switch): measured on
// a 1-vCPU guest, 80 session pings 100 ms apart made the vCPU thread write
// the eventfd about 3,000 times with the default 50 µs slack and 900 times
// with 1 ms, and the median round trip fell from 8.5-11.4 ms to 6.2-6.4 ms
// (bench/agentrtt). A slack of 1 ms lets the kernel fire those 20 µs sleeps
// together with the next timer within a millisecond; nothing the agent
// times needs finer precision. Commands the agent starts do not inherit it
// (WithStartSlack).
const TimerSlack = time.Millisecond

// startSlack is the process's timer slack before SetTimerSlack changed it,
// in nanoseconds; zero while SetTimerSlack has not run.
var startSlack atomic.Int64

// SetTimerSlack sets the timer slack of every thread of this process to d
// (/proc/TID/timerslack_ns; changing another thread's needs CAP_SYS_NICE,
// which the agent has as root). Threads made later copy the slack of the
// thread that makes them, so they have it too. The slack the process had
// before is kept for WithStartSlack.
func SetTimerSlack(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("set timer slack: %s is not positive", d)
	}
	// The process's own entry is its first thread's.
	b, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		return fmt.Errorf("set timer slack: %w", err)
	}
	old, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return fmt.Errorf("set timer slack: parse /proc/self/timerslack_ns: %w", err)
	}
	startSlack.CompareAndSwap(0, old)
	want := strconv.FormatInt(d.Nanoseconds(), 10)
	// A thread made during a pass may have copied the old value from a
	// thread not yet changed: passes go on until one changes nothing.
	for range 5 {
		changed, err := setThreadsSlack(want)
		if err != nil {
			return fmt.Errorf("set timer slack: %w", err)
		}
		if !changed {
			return nil
		}
	}
	return errors.New("set timer slack: threads kept appearing with another slack")
}

// setThreadsSlack writes want to the timer slack of each thread of this
// process that has another; changed says whether any had.
func setThreadsSlack(want string) (changed bool, err error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		p := "/proc/" + t.Name() + "/timerslack_ns"
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended
		}
		if err != nil {
			return false, err
		}
		if strings.TrimSpace(string(b)) == want {
			continue
		}
		if err := os.WriteFile(p, []byte(want), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// WithStartSlack runs fn on an OS thread of its own whose timer slack is
// the one the process had before SetTimerSlack, and returns when fn has.
// A process fn starts (os/exec forks from the calling thread) inherits that
// slack, not the agent's: a command run by `banger vm exec` gets the slack
// any process started by systemd gets. The thread ends with fn. Without an
// earlier SetTimerSlack, fn runs as it is.
func WithStartSlack(fn func()) {
	slack := startSlack.Load()
	if slack == 0 {
		fn()
		return
	}
	done := make(chan struct{})
	var panicked any
	go func() {
		defer close(done)
		defer func() { panicked = recover() }()
		// Never unlocked: the thread exits with this goroutine, so no
		// other goroutine ever runs with its slack.
		runtime.LockOSThread()
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack), 0, 0, 0)
		fn()
	}()
	<-done
	if panicked != nil {
		panic(panicked) // on the caller's goroutine, where it would have been
	}
}
