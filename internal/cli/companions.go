package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// A Companion is a banger command that another binary of banger runs:
// the command links large packages (the TUI's Bubble Tea, doctor's host
// checks and KVM probe, the runtime bundle's tools and downloads) whose
// initialisation would slow the start of every other banger command
// (bench/startup measures it). banger knows its name and help line;
// `banger NAME ARGS...` replaces itself with `BINARY NAME ARGS...` (found
// as the daemon is: beside banger, else in $PATH), which parses the
// flags, prints the help and runs the command as banger's; completion
// asks `BINARY __complete NAME ...`.
type Companion struct {
	Name, Short string
	// Binary runs the command: bangerd (package hostcmd: it starts no
	// daemon) or banger-tui (package tuicmd).
	Binary string
}

// Companions are banger's commands that other binaries run.
var Companions = []Companion{
	{"doctor", "Check that this host can run banger VMs and build images", "bangerd"},
	{"runtime", "Fetch, verify, package and install the runtime bundle", "bangerd"},
	{"tui", "Browse and operate VMs in a terminal UI", "banger-tui"},
}

// newCompanionCmd is banger's side of c.
func newCompanionCmd(c Companion) *cobra.Command {
	cmd := &cobra.Command{
		Use:   c.Name,
		Short: c.Short,
		// The companion parses the flags (--help too) and the arguments.
		DisableFlagParsing: true,
		Args:               cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			return c.exec(append([]string{c.Name}, args...))
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return c.completions(append(append([]string{c.Name}, args...), toComplete))
		},
	}
	cmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) { // banger help NAME
		if err := c.exec([]string{c.Name, "--help"}); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "banger: "+err.Error())
		}
	})
	return cmd
}

// exec replaces this process with `BINARY ARGS...`: its exit status,
// signals and terminal are the command's own. For bangerd it sets
// no_new_privs first, so that bangerd runs with this process's privileges,
// not with the file capabilities (CAP_NET_ADMIN) an ordinary user may have
// given the bangerd binary for the daemon: the commands it runs for banger
// need none and start no daemon. (banger-tui has no file capabilities, and
// a daemon the TUI starts must get bangerd's.) It returns only when the
// binary cannot be run.
func (c Companion) exec(args []string) error {
	bin, err := companionPath(c.Binary)
	if err != nil {
		return err
	}
	if c.Binary == "bangerd" {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs before running %s: %w", bin, err)
		}
	}
	err = syscall.Exec(bin, append([]string{c.Binary}, args...), os.Environ())
	return fmt.Errorf("run %s: %w", bin, err)
}

// completions asks `BINARY __complete ARGS...` (the last argument is the
// word being completed) and returns its answer: a completion per line,
// then ":DIRECTIVE". When the binary cannot answer it offers nothing.
func (c Companion) completions(args []string) ([]cobra.Completion, cobra.ShellCompDirective) {
	bin, err := companionPath(c.Binary)
	if err != nil {
		cobra.CompDebugln("no completion: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{cobra.ShellCompRequestCmd}, args...)...).Output()
	if err != nil {
		cobra.CompDebugln(fmt.Sprintf("no completion from %s: %v", bin, err), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return parseCompletions(out)
}

// parseCompletions reads the output of `__complete`.
func parseCompletions(out []byte) ([]cobra.Completion, cobra.ShellCompDirective) {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	directive := cobra.ShellCompDirectiveNoFileComp
	if n := len(lines); n > 0 && strings.HasPrefix(lines[n-1], ":") {
		if d, err := strconv.Atoi(lines[n-1][1:]); err == nil {
			directive = cobra.ShellCompDirective(d)
		}
		lines = lines[:n-1]
	}
	var comps []cobra.Completion
	for _, l := range lines {
		if l != "" {
			comps = append(comps, l)
		}
	}
	return comps, directive
}

// CompanionRoot returns the root of the commands binary runs for banger:
// named "banger", so that their help and errors read as banger's, with
// cmds added and the tree finished as banger's is (finishTree and
// completeTree).
func CompanionRoot(cmds ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs on your own machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(cmds...)
	finishTree(root)
	completeTree(root)
	return root
}

// CompanionArgs reports whether args (a companion binary's arguments) ask
// for one of the commands binary runs for banger, or to complete one.
func CompanionArgs(binary string, args []string) bool {
	if len(args) > 1 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		args = args[1:]
	}
	for _, c := range Companions {
		if len(args) > 0 && c.Binary == binary && c.Name == args[0] {
			return true
		}
	}
	return false
}
