// Package heavy holds the banger commands that link large packages:
// `doctor` (the host checks and the KVM probe) and `runtime` (the runtime
// bundle's tools and downloads). The bangerd binary runs them, as `bangerd
// NAME ARGS...`, when banger hands them over (see cli.BangerdCommands): so
// the banger binary does not link these packages and every other command
// starts without their initialisation.
package heavy

import (
	"context"
	"slices"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/cli"
)

// NewRoot returns the tree of these commands under a root named "banger",
// so that their help and errors read as banger's.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs on your own machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDoctorCmd(), newRuntimeCmd())
	cli.FinishTree(root)
	return root
}

// Handles reports whether args (bangerd's arguments) name one of these
// commands, or ask to complete one.
func Handles(args []string) bool {
	if len(args) > 1 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		args = args[1:]
	}
	return len(args) > 0 && slices.ContainsFunc(cli.BangerdCommands, func(c struct{ Name, Short string }) bool {
		return c.Name == args[0]
	})
}

// Main runs the command args name and returns the process exit status.
func Main(ctx context.Context, args []string) int {
	return cli.Execute(ctx, NewRoot(), args)
}
