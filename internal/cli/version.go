package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of banger (and of the running daemon)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "banger %s\n", version.String())
			// Report the daemon only if one is running; never start one here.
			if dirs, err := paths.Resolve(); err == nil {
				// daemon.info, not daemon.status: no pass over every VM.
				if info, err := daemonInfo(cmd.Context(), client.New(dirs.Socket())); err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "bangerd %s (pid %d)\n", info.Version, info.PID)
				}
			}
			return nil
		},
	}
}
