package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// tuiSession drives `banger tui` in a detached tmux session, inside the
// test's network namespace.
type tuiSession struct {
	t    *testing.T
	name string
}

func startTUI(t *testing.T, e *env) *tuiSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testhost.Skip(t, "the TUI end-to-end test needs tmux (apt-get install tmux)")
	}
	var cmd strings.Builder
	cmd.WriteString("exec ip netns exec " + e.netns + " env -i")
	for _, kv := range append(e.environ(), "TERM=xterm-256color") {
		cmd.WriteString(" " + shellQuote(kv))
	}
	cmd.WriteString(" " + shellQuote(e.bin+"/banger") + " tui")
	s := &tuiSession{t: t, name: fmt.Sprintf("bgr-tui-%d", time.Now().UnixNano())}
	out, err := exec.Command("tmux", "new-session", "-d", "-s", s.name, "-x", "100", "-y", "30", cmd.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", s.name).Run() })
	return s
}

func (s *tuiSession) keys(keys ...string) {
	s.t.Helper()
	if out, err := exec.Command("tmux", append([]string{"send-keys", "-t", s.name}, keys...)...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %v: %v: %s", keys, err, out)
	}
}

func (s *tuiSession) screen() string {
	out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", s.name).Output()
	return string(out)
}

// waitScreen waits until every want appears on the screen.
func (s *tuiSession) waitScreen(timeout time.Duration, wants ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		scr := s.screen()
		ok := true
		for _, w := range wants {
			if !strings.Contains(scr, w) {
				ok = false
			}
		}
		if ok {
			return scr
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("screen lacks %q after %s:\n%s", wants, timeout, scr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitGone waits until none of gone is on the screen.
func (s *tuiSession) waitGone(timeout time.Duration, gone ...string) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		scr := s.screen()
		if !slices.ContainsFunc(gone, func(g string) bool { return strings.Contains(scr, g) }) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("screen still shows one of %q after %s:\n%s", gone, timeout, scr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tuiWithRunningVM checks the TUI against the running VM "dev": listed as
// running, the console view shows boot messages, SSH from the TUI returns
// to it with the reminder, and stop from the TUI makes the VM stopped.
func tuiWithRunningVM(ctx context.Context, t *testing.T, e *env) {
	s := startTUI(t, e)
	s.waitScreen(30*time.Second, "NAME", "STATE", "dev", "running")

	s.keys("l")
	s.waitScreen(15*time.Second, "login:")
	s.keys("Escape")
	// The console's own lines may say "running" (systemd's jobs): wait for
	// its header to go before a key meant for the list is sent.
	s.waitGone(10*time.Second, "console: dev")
	s.waitScreen(10*time.Second, "NAME", "STATE", "dev", "running")

	s.keys("Enter")
	s.waitScreen(60*time.Second, "root@dev")
	s.keys("exit", "Enter")
	s.waitScreen(30*time.Second, `VM "dev" is still running`)

	s.keys("x")
	s.waitScreen(90*time.Second, "stopped")
	s.keys("q")
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("tmux", "has-session", "-t", s.name).Run() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the TUI did not quit on q:\n%s", s.screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := e.vm(ctx, "dev").State; got != "stopped" {
		t.Fatalf("after stop from the TUI the VM is %s", got)
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
