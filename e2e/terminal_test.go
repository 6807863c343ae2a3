package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/cli"
	"github.com/bangerhq/banger/internal/cli/hostcmd"
	"github.com/bangerhq/banger/internal/testhost"
)

// onTerminal runs the CLI (inside the namespace when one is set) as a user
// at a terminal would: on a pseudo-terminal (TERM=xterm-256color) that is
// its controlling terminal, stdin, stdout and stderr. It returns what the
// CLI wrote there and its exit status.
func (e *env) onTerminal(timeout time.Duration, args ...string) (string, int) {
	e.t.Helper()
	bin := e.bin + "/banger"
	if e.cli != "" {
		bin = e.cli
	}
	argv := append([]string{bin}, args...)
	if e.netns != "" {
		argv = append([]string{"ip", "netns", "exec", e.netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(e.environ(), "TERM=xterm-256color")
	return testhost.OnTerminal(e.t, cmd, timeout)
}

// bootPhases are the phases a boot reports, in order (see vm.PhaseDisk...).
var bootPhases = []string{"disk", "vmm", "boot", "ssh", "agent"}

// checkBootProgress checks what `vm create NAME` wrote to a terminal: the
// live progress line showed at least two boot phases, in order, before the
// final line, and nothing queried the terminal.
func checkBootProgress(t *testing.T, out, name string) {
	t.Helper()
	final := strings.Index(out, name+" is running at ")
	if final < 0 {
		t.Fatalf("vm create on a terminal printed no final line:\n%q", out)
	}
	var seen []string
	last := -1
	for _, p := range bootPhases {
		// The live line is redrawn in place: "\r" + phase + two spaces.
		i := strings.Index(out[:final], "\r"+p+"  ")
		if i < 0 {
			continue
		}
		if i < last {
			t.Errorf("phase %s shown before an earlier phase:\n%q", p, out)
		}
		last = i
		seen = append(seen, p)
	}
	if len(seen) < 2 {
		t.Fatalf("vm create showed phases %q before its final line, want at least two of %q:\n%q", seen, bootPhases, out)
	}
	if q := testhost.TerminalQuery(out); q != "" {
		t.Fatalf("vm create wrote the terminal query %q:\n%q", q, out)
	}
	t.Logf("vm create on a terminal showed the phases %q", seen)
}

// terminalCLI checks the CLI as met at a terminal, with the running VM
// "dev" and the image "default": completion of VM and image names from
// the real daemon, no terminal query from any non-TUI command, and an
// unknown subcommand refused with exit status 1 by every command group.
func terminalCLI(ctx context.Context, t *testing.T, e *env) {
	e.must(ctx, "vm", "create", "idle", "--no-start", "--cpus", "1", "--memory", "512")
	defer e.must(ctx, "vm", "rm", "idle")

	var vms []api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "ls", "--json")), &vms); err != nil {
		t.Fatal(err)
	}
	all, running, stopped := namesByState(vms)
	if !slices.Contains(running, "dev") || !slices.Contains(stopped, "idle") {
		t.Fatalf("want dev running and idle stopped: %+v", vms)
	}
	var images []string
	var ims []api.Image
	if err := json.Unmarshal([]byte(e.must(ctx, "image", "ls", "--json")), &ims); err != nil {
		t.Fatal(err)
	}
	for _, im := range ims {
		images = append(images, im.Name)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"vm", "ssh", ""}, running},
		{[]string{"vm", "stop", ""}, running},
		{[]string{"vm", "start", ""}, stopped},
		{[]string{"vm", "show", ""}, all},
		{[]string{"vm", "rm", "dev", ""}, without(all, "dev")},
		{[]string{"vm", "create", "--image", ""}, images},
		{[]string{"image", "show", ""}, images},
		{[]string{"vm", "create", "--vmm", ""}, []string{"qemu", "firecracker"}},
	} {
		got := completions(t, e.must(ctx, append([]string{"__complete"}, tc.args...)...))
		if !sameSet(got, tc.want) {
			t.Errorf("banger __complete %q offers %q, want exactly %q", tc.args, got, tc.want)
		}
	}

	// No command but the TUI queries the terminal.
	for _, args := range [][]string{
		{"--help"}, {"version"}, {"vm", "ls"}, {"vm", "show", "dev"}, {"image", "ls"},
		{"daemon", "status"}, {"vm", "ping", "dev"}, {"vm", "logs", "idle"},
		{"vm", "ssh", "dev", "--", "true"}, {"vm", "frobnicate"}, {"doctor", "--no-probe"},
	} {
		out, _ := e.onTerminal(2*time.Minute, args...)
		if q := testhost.TerminalQuery(out); q != "" {
			t.Errorf("banger %s wrote the terminal query %q:\n%q", strings.Join(args, " "), q, out)
		}
	}

	// Every command group refuses an unknown subcommand, those bangerd runs
	// too.
	var groups [][]string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() && !c.Hidden {
			groups = append(groups, strings.Fields(c.CommandPath())[1:])
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cli.NewRoot())
	walk(hostcmd.NewRoot()) // doctor and runtime, which bangerd runs
	if len(groups) < 5 {
		t.Fatalf("only %d command groups: %q", len(groups), groups)
	}
	for _, g := range groups {
		r := e.banger(ctx, append(g, "frobnicate")...)
		if r.code != 1 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
			t.Errorf("banger %s frobnicate: exit %d, stderr %q; want exit 1 and an unknown command error", strings.Join(g, " "), r.code, r.stderr)
		}
	}
}

// completions returns the words of `banger __complete` output: one per
// line, before a tab and its description, up to the ":DIRECTIVE" line.
func completions(t *testing.T, out string) []string {
	t.Helper()
	var words []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, ":") {
			break
		}
		words = append(words, strings.SplitN(l, "\t", 2)[0])
	}
	return words
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func without(list []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == drop })
}
