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

// BangerdCommands are the commands banger runs through the bangerd binary
// (package heavy implements them). They link large packages (doctor's host
// checks and KVM probe, the runtime bundle's tools and downloads) whose
// initialisation would slow the start of every banger command
// (bench/startup measures it). banger knows their names and help lines;
// `banger NAME ARGS...` replaces itself with `bangerd NAME ARGS...` (found
// as the daemon is: beside banger, else in $PATH), which parses the flags,
// prints the help and runs the command; completion asks `bangerd
// __complete NAME ...`. This starts no daemon, and the command gets none
// of the file capabilities bangerd may carry for the daemon (see
// execBangerd).
var BangerdCommands = []struct{ Name, Short string }{
	{"doctor", "Check that this host can run banger VMs and build images"},
	{"runtime", "Fetch, verify, package and install the runtime bundle"},
}

// newBangerdCmd is banger's side of the bangerd command name.
func newBangerdCmd(name, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		// bangerd parses the flags (--help too) and the arguments.
		DisableFlagParsing: true,
		Args:               cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			return execBangerd(append([]string{name}, args...))
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return bangerdCompletions(append(append([]string{name}, args...), toComplete))
		},
	}
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) { // banger help NAME
		if err := execBangerd([]string{name, "--help"}); err != nil {
			fmt.Fprintln(c.ErrOrStderr(), "banger: "+err.Error())
		}
	})
	return cmd
}

// execBangerd replaces this process with `bangerd ARGS...`: its exit
// status, signals and terminal are the command's own. It sets
// no_new_privs first, so that bangerd runs with this process's privileges,
// not with the file capabilities (CAP_NET_ADMIN) an ordinary user may have
// given the bangerd binary for the daemon: the commands it runs for banger
// neither need them nor start a daemon. It returns only when bangerd cannot
// be run.
func execBangerd(args []string) error {
	bin, err := bangerdPath()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs before running %s: %w", bin, err)
	}
	err = syscall.Exec(bin, append([]string{"bangerd"}, args...), os.Environ())
	return fmt.Errorf("run %s: %w", bin, err)
}

// bangerdCompletions asks `bangerd __complete ARGS...` (the last argument
// is the word being completed) and returns its answer: a completion per
// line, then ":DIRECTIVE". When bangerd cannot answer it offers nothing.
func bangerdCompletions(args []string) ([]cobra.Completion, cobra.ShellCompDirective) {
	bin, err := bangerdPath()
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
