package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/cli"
	"github.com/bangerhq/banger/internal/cli/hostcmd"
	"github.com/bangerhq/banger/internal/cli/tuicmd"
)

// companion is what a companion binary's package offers.
type companion struct {
	root    func() *cobra.Command
	handles func([]string) bool
	main    func(context.Context, []string) int
}

var companions = map[string]companion{
	"bangerd":    {hostcmd.NewRoot, hostcmd.Handles, hostcmd.Main},
	"banger-tui": {tuicmd.NewRoot, tuicmd.Handles, tuicmd.Main},
}

// TestCompanionsMatch: banger lists exactly the commands its companion
// binaries run, with their help lines, and each binary handles its own
// and no other.
func TestCompanionsMatch(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range cli.Companions {
		listed[c.Binary+" "+c.Name] = true
		bin, ok := companions[c.Binary]
		if !ok {
			t.Fatalf("%s: no binary %s", c.Name, c.Binary)
		}
		cmd, _, err := bin.root().Find([]string{c.Name})
		if err != nil || cmd.Name() != c.Name {
			t.Errorf("%s does not run %s (%v)", c.Binary, c.Name, err)
			continue
		}
		if cmd.Short != c.Short {
			t.Errorf("%s: banger's help line %q, %s's %q", c.Name, c.Short, c.Binary, cmd.Short)
		}
		if !bin.handles([]string{c.Name, "x"}) || !bin.handles([]string{cobra.ShellCompRequestCmd, c.Name, ""}) {
			t.Errorf("%s does not handle %s", c.Binary, c.Name)
		}
	}
	for name, bin := range companions {
		for _, cmd := range bin.root().Commands() {
			if cmd.Name() != "help" && cmd.Name() != "completion" && !listed[name+" "+cmd.Name()] {
				t.Errorf("%s runs %s, which banger does not hand over (cli.Companions)", name, cmd.Name())
			}
		}
		for _, args := range [][]string{nil, {"vm", "ls"}, {cobra.ShellCompRequestCmd}, {"--version"}, {"banger-sandbox-init"}} {
			if bin.handles(args) {
				t.Errorf("%s would run %q as a banger command", name, args)
			}
		}
	}
}

// TestCompanionTrees: the rules of banger's command tree hold in the
// companions' trees too: a group refuses an unknown subcommand with exit
// status 1, and arguments complete.
func TestCompanionTrees(t *testing.T) {
	for name, bin := range companions {
		var walk func(*cobra.Command)
		walk = func(c *cobra.Command) {
			path := strings.Fields(c.CommandPath())[1:]
			if c.HasSubCommands() {
				if code := bin.main(context.Background(), append(path, "frobnicate")); code != 1 {
					t.Errorf("%s: banger %s frobnicate: exit %d, want 1", name, strings.Join(path, " "), code)
				}
			} else if c.Args != nil && c.Args(c, []string{"x"}) == nil && c.ValidArgsFunction == nil {
				t.Errorf("%s: banger %s takes arguments that complete to nothing", name, strings.Join(path, " "))
			}
			for _, sub := range c.Commands() {
				walk(sub)
			}
		}
		walk(bin.root())
	}
}
