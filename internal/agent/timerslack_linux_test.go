package agent

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestTimerSlack sets a slack on every thread of the test process and
// checks that a process started through WithStartSlack has the slack the
// test process started with, one started directly the new one.
func TestTimerSlack(t *testing.T) {
	testhost.NeedRoot(t, "changing the timer slack of other threads needs CAP_SYS_NICE")
	orig := threadSlack(t, "thread-self")
	const slack = 3 * time.Millisecond
	if orig == strconv.FormatInt(slack.Nanoseconds(), 10) {
		t.Fatalf("the test process already has a slack of %s", slack)
	}
	// Threads of their own, blocked, so that there are several to change.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-release
		})
	}
	t.Cleanup(func() {
		close(release)
		wg.Wait()
	})
	if err := SetTimerSlack(slack); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n, _ := strconv.ParseInt(orig, 10, 64)
		SetTimerSlack(time.Duration(n))
	})
	want := strconv.FormatInt(slack.Nanoseconds(), 10)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 5 {
		t.Fatalf("only %d threads", len(tasks))
	}
	for _, task := range tasks {
		if got := threadSlack(t, task.Name()); got != want {
			t.Errorf("thread %s has slack %s, want %s", task.Name(), got, want)
		}
	}
	child := func() string {
		out, err := exec.Command("cat", "/proc/self/timerslack_ns").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	var fromStart string
	WithStartSlack(func() { fromStart = child() })
	if fromStart != orig {
		t.Errorf("a process started through WithStartSlack has slack %s, want the start slack %s", fromStart, orig)
	}
	if s := child(); s != want {
		t.Errorf("a process started directly has slack %s, want the process's %s (the test proves nothing otherwise)", s, want)
	}
	if s := threadSlack(t, "thread-self"); s != want {
		t.Errorf("after WithStartSlack this thread has slack %s, want %s", s, want)
	}
}

func TestSetTimerSlackRefusesZero(t *testing.T) {
	if err := SetTimerSlack(0); err == nil {
		t.Fatal("SetTimerSlack(0) succeeded")
	}
}

func threadSlack(t *testing.T, task string) string {
	t.Helper()
	if task == "thread-self" {
		task = strconv.Itoa(unix.Gettid())
	}
	b, err := os.ReadFile("/proc/" + task + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
