// Package tuicmd is `banger tui`, which the banger-tui binary runs (see
// cli.Companions): the TUI's packages (Bubble Tea, Lip Gloss, the bubbles)
// stay out of the banger binary, so that every other command starts
// without their initialisation.
package tuicmd

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/cli"
	"github.com/bangerhq/banger/internal/tui"
)

// newTUICmd is `banger tui`, run by banger-tui: the terminal UI over the same daemon calls as
// the vm commands. SSH runs the exact `banger vm ssh` invocation and shows
// the same reminder in the status line (both from internal/guestssh).
func newTUICmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tui",
		Short: "Browse and operate VMs in a terminal UI",
		Long: "A full-screen view of your VMs and images with live state. Create, start, stop,\n" +
			"restart, delete, read the console log, SSH in or open a shell through the guest agent\n" +
			"from the keyboard; press ? for keys.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cli.Connect(cmd.Context())
			if err != nil {
				return err
			}
			return tui.Run(cmd.Context(), tui.Options{
				Backend: c,
				Reconnect: func(ctx context.Context) (tui.Backend, error) {
					c, err := cli.Connect(ctx)
					if err != nil {
						return nil, err
					}
					return c, nil
				},
				NoRemind:  !cli.RemindEnabled(),
				ParseSize: cli.ParseSize,
			})
		},
	}
}

// NewRoot returns the tree banger-tui runs, read as banger's.
func NewRoot() *cobra.Command { return cli.CompanionRoot(newTUICmd()) }

// Handles reports whether args (banger-tui's arguments) ask for the TUI,
// or to complete its command line.
func Handles(args []string) bool { return cli.CompanionArgs("banger-tui", args) }

// Main runs the command args name and returns the process exit status.
func Main(ctx context.Context, args []string) int {
	return cli.Execute(ctx, NewRoot(), args)
}
