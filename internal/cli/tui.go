package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/tui"
)

// newTUICmd is `banger tui`: the terminal UI over the same daemon calls as
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
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			return tui.Run(cmd.Context(), tui.Options{
				Backend: c,
				Reconnect: func(ctx context.Context) (tui.Backend, error) {
					c, err := connect(ctx)
					if err != nil {
						return nil, err
					}
					return c, nil
				},
				NoRemind:  !remindEnabled(),
				ParseSize: ParseSize,
			})
		},
	}
}
