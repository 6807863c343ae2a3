package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newSSHConfigCmd() *cobra.Command {
	var pathOnly bool
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Print an OpenSSH config for reaching VMs as NAME.banger.internal",
		Long: "Prints an OpenSSH client configuration with a Host block per VM (its address, its pinned host key)\n" +
			"and one for *.banger.internal (user root, the daemon's key, strict host key checking), so that\n" +
			"`ssh dev.banger.internal`, scp, rsync, git and editors' remote SSH reach VM dev.\n\n" +
			"bangerd keeps the same text current in a file after every vm create and rm; include it once,\n" +
			"at the top of ~/.ssh/config:\n\n" +
			"    Include PATH    (PATH: banger ssh-config --path)",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			r, err := c.SSHConfig(cmd.Context())
			if err != nil {
				return err
			}
			if pathOnly {
				fmt.Fprintln(cmd.OutOrStdout(), r.Path)
				return nil
			}
			fmt.Fprint(cmd.OutOrStdout(), r.Text)
			return nil
		},
	}
	cmd.Flags().BoolVar(&pathOnly, "path", false, "print the path of the file bangerd keeps current instead")
	return cmd
}
