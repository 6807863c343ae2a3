package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
)

// each runs fn for every name (VMs or images) and joins the errors, so one
// bad name does not stop the others.
func each(cmd *cobra.Command, names []string, fn func(c *client.Client, name string) error) error {
	c, err := connect(cmd.Context())
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := fn(c, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newVMStartCmd() *cobra.Command {
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:   "start NAME...",
		Short: "Boot stopped VMs and wait until they answer SSH",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return each(cmd, args, func(c *client.Client, name string) error {
				vm, err := withProgress(cmd, pf, func(ctx context.Context) (api.VM, error) { return c.StartVM(ctx, name) })
				if err != nil {
					return bootFailure(err, name, false)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is running at %s\n", vm.Name, vm.IP)
				return nil
			})
		},
	}
	pf = addProgressFlags(cmd)
	return cmd
}

func newVMStopCmd() *cobra.Command {
	var force bool
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop VMs (ACPI power-off, then kill after a timeout)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return each(cmd, args, func(c *client.Client, name string) error {
				vm, err := withProgress(cmd, pf, func(ctx context.Context) (api.VM, error) { return c.StopVM(ctx, name, force) })
				if err != nil {
					return bootFailure(err, name, false)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is %s\n", vm.Name, vm.State)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the VMM at once instead of asking the guest to power off")
	pf = addProgressFlags(cmd)
	return cmd
}

func newVMRestartCmd() *cobra.Command {
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:   "restart NAME...",
		Short: "Stop and start VMs",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return each(cmd, args, func(c *client.Client, name string) error {
				vm, err := withProgress(cmd, pf, func(ctx context.Context) (api.VM, error) { return c.RestartVM(ctx, name) })
				if err != nil {
					return bootFailure(err, name, false)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is running at %s\n", vm.Name, vm.IP)
				return nil
			})
		},
	}
	pf = addProgressFlags(cmd)
	return cmd
}

func newVMRemoveCmd() *cobra.Command {
	var force bool
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete VMs and their disks",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return each(cmd, args, func(c *client.Client, name string) error {
				_, err := withProgress(cmd, pf, func(ctx context.Context) (struct{}, error) { return struct{}{}, c.DeleteVM(ctx, name, force) })
				if err != nil {
					return bootFailure(err, name, false)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop running VMs first (kills them)")
	pf = addProgressFlags(cmd)
	return cmd
}
