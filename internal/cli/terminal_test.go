package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestNoTerminalQuery runs the real banger binary on a pseudo-terminal and
// fails when it writes a terminal query: OSC 11 (background colour) or a
// cursor position report request. Bubble Tea's init sends both unless
// package quietterm settles the question first. (The end-to-end test does
// the same for commands that talk to a real daemon.)
func TestNoTerminalQuery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the banger binary")
	}
	bin := filepath.Join(t.TempDir(), "banger")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/banger")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TERM=xterm-256color",
		"XDG_RUNTIME_DIR=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_STATE_HOME=" + dir, "XDG_DATA_HOME=" + dir}
	for _, args := range [][]string{{"--help"}, {"version"}, {"vm", "frobnicate"}, {"vm", "create", "--help"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		// A query waits up to 5 s for an answer this terminal never gives.
		out, _ := testhost.OnTerminal(t, cmd, 30*time.Second)
		if !strings.Contains(out, "banger") {
			t.Errorf("banger %v printed %q: not its output", args, out)
		}
		if q := testhost.TerminalQuery(out); q != "" {
			t.Errorf("banger %v wrote the terminal query %q: %q", args, q, out)
		}
	}
}
