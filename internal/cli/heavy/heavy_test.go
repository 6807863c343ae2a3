package heavy

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/cli"
)

// TestBangerdCommandsMatch: banger lists exactly these commands, with
// their help lines, and hands them to bangerd, which handles them.
func TestBangerdCommandsMatch(t *testing.T) {
	var names []string
	for _, c := range NewRoot().Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		names = append(names, c.Name())
		i := slices.IndexFunc(cli.BangerdCommands, func(b struct{ Name, Short string }) bool { return b.Name == c.Name() })
		if i < 0 {
			t.Errorf("bangerd runs %s, which banger does not hand over (cli.BangerdCommands)", c.Name())
			continue
		}
		if got := cli.BangerdCommands[i].Short; got != c.Short {
			t.Errorf("%s: banger's help line %q, bangerd's %q", c.Name(), got, c.Short)
		}
		if !Handles([]string{c.Name(), "x"}) || !Handles([]string{cobra.ShellCompRequestCmd, c.Name(), ""}) {
			t.Errorf("bangerd does not handle %s", c.Name())
		}
	}
	if len(names) != len(cli.BangerdCommands) {
		t.Errorf("bangerd runs %q; banger hands over %v", names, cli.BangerdCommands)
	}
	for _, args := range [][]string{nil, {"vm", "ls"}, {cobra.ShellCompRequestCmd}, {"--version"}, {"banger-sandbox-init"}} {
		if Handles(args) {
			t.Errorf("bangerd would run %q as a banger command", args)
		}
	}
}

// TestTree: the rules of every banger command tree (cli.FinishTree) hold
// here too: a group refuses an unknown subcommand with exit status 1, and
// arguments complete.
func TestTree(t *testing.T) {
	var groups [][]string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.Fields(c.CommandPath())[1:]
		if c.HasSubCommands() {
			groups = append(groups, path)
		} else if c.Args != nil && c.Args(c, []string{"x"}) == nil && c.ValidArgsFunction == nil {
			t.Errorf("banger %s takes arguments that complete to nothing", strings.Join(path, " "))
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRoot())
	if !slices.ContainsFunc(groups, func(g []string) bool { return slices.Equal(g, []string{"runtime"}) }) {
		t.Fatalf("no runtime group among %q", groups)
	}
	for _, g := range groups {
		if code := Main(context.Background(), append(g, "frobnicate")); code != 1 {
			t.Errorf("banger %s frobnicate: exit %d, want 1", strings.Join(g, " "), code)
		}
	}
}
