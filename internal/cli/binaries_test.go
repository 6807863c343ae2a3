package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestRealBinaries builds banger, bangerd and banger-tui and runs them as
// a user would, with a private banger (no daemon is started).
func TestRealBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the banger, bangerd and banger-tui binaries")
	}
	bin := t.TempDir()
	for _, name := range []string{"banger", "bangerd", "banger-tui"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../../cmd/"+name)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	home := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TERM=xterm-256color",
		"XDG_RUNTIME_DIR=" + home, "XDG_CONFIG_HOME=" + home, "XDG_STATE_HOME=" + home, "XDG_DATA_HOME=" + home}
	banger := filepath.Join(bin, "banger")

	// No command writes a terminal query (OSC 11 for the background
	// colour, a cursor position report): Bubble Tea's init sends both
	// unless package quietterm settles the question first (banger-tui
	// runs the TUI); bangerd runs doctor and runtime. (The
	// end-to-end test does the same for commands that talk to a daemon.)
	t.Run("no terminal query", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"version"}, {"vm", "frobnicate"}, {"vm", "create", "--help"}, {"doctor", "--help"}, {"tui", "--help"}} {
			cmd := exec.Command(banger, args...)
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
	})

	// doctor and runtime run in bangerd, tui in banger-tui, as banger's
	// commands: help,
	// errors, exit status and completion as if banger ran them.
	t.Run("commands bangerd runs", func(t *testing.T) {
		run := func(bin string, args ...string) (stdout, stderr string, code int) {
			cmd := exec.Command(bin, args...)
			cmd.Env = env
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return o.String(), e.String(), code
		}
		for _, tc := range []struct {
			args []string
			code int
			want []string // in stdout, or stderr when code != 0
		}{
			{[]string{"--help"}, 0, []string{"doctor ", "runtime ", "tui ", Companions[0].Short}},
			{[]string{"tui", "--help"}, 0, []string{"banger tui [flags]"}},
			{[]string{"tui", "extra"}, 1, []string{`unknown command "extra" for "banger tui"`}},
			{[]string{"doctor", "--help"}, 0, []string{"banger doctor [flags]", "--no-probe"}},
			{[]string{"help", "runtime"}, 0, []string{"banger runtime [command]", "fetch"}},
			{[]string{"runtime", "frobnicate"}, 1, []string{`banger: unknown command "frobnicate" for "banger runtime"`}},
			{[]string{"runtime", "fech"}, 1, []string{"Did you mean this?\n\tfetch"}},
			{[]string{"doctor", "extra"}, 1, []string{`unknown command "extra" for "banger doctor"`}},
			{[]string{"__complete", "runtime", "fetch", ""}, 0, []string{"firecracker\n", "kernel\n", "agent\n", ":4\n"}},
			{[]string{"__complete", "runtime", ""}, 0, []string{"status\t", "fetch\t"}},
			{[]string{"__complete", "doctor", "--"}, 0, []string{"--json\t", "--no-probe\t"}},
		} {
			stdout, stderr, code := run(banger, tc.args...)
			got := stdout
			if tc.code != 0 {
				got = stderr
			}
			for _, w := range tc.want {
				if code != tc.code || !strings.Contains(got, w) {
					t.Errorf("banger %q: exit %d, want %d with %q in:\nstdout %s\nstderr %s", tc.args, code, tc.code, w, stdout, stderr)
					break
				}
			}
		}

		// banger hands the command over as it was typed, and bangerd runs
		// under no_new_privs (no file capabilities): a script stands in
		// for bangerd to show what it gets.
		probe := t.TempDir()
		if err := os.Link(banger, filepath.Join(probe, "banger")); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\ngrep NoNewPrivs /proc/self/status\necho \"args: $*\"\n"
		if err := os.WriteFile(filepath.Join(probe, "bangerd"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if stdout, stderr, code := run(filepath.Join(probe, "banger"), "doctor", "--json", "x y"); code != 0 ||
			!strings.Contains(stdout, "NoNewPrivs:\t1") || !strings.Contains(stdout, "args: doctor --json x y") {
			t.Errorf("what bangerd got: exit %d\n%s%s", code, stdout, stderr)
		}

		// Without bangerd, the command says what is missing.
		alone := filepath.Join(t.TempDir(), "banger")
		if err := os.Link(banger, alone); err != nil {
			t.Fatal(err)
		}
		saved := env[0]
		env[0] = "PATH=/nonexistent"
		_, stderr, code := run(alone, "doctor")
		env[0] = saved
		if code != 1 || !strings.Contains(stderr, "bangerd not found") {
			t.Errorf("doctor without bangerd: exit %d, stderr %q", code, stderr)
		}
	})
}
