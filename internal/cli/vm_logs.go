package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
)

func newVMLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			f, err := os.Open(vm.ConsoleLog)
			if errors.Is(err, os.ErrNotExist) {
				if !follow {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s has no console output yet\n", vm.Name)
					return nil
				}
				for errors.Is(err, os.ErrNotExist) {
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(200 * time.Millisecond):
					}
					f, err = os.Open(vm.ConsoleLog)
				}
			}
			if err != nil {
				return err
			}
			defer f.Close()
			for {
				if _, err := io.Copy(cmd.OutOrStdout(), f); err != nil {
					return err
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new console output")
	return cmd
}
