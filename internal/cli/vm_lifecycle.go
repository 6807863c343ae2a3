package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

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

// vmOpCmd completes cmd into a command that runs op on each VM it names,
// one after the other, showing op's progress and printing the line op
// returns. A failure says where to read more (bootFailure) and does not
// stop the others.
func vmOpCmd(cmd *cobra.Command, op func(ctx context.Context, c *client.Client, name string) (string, error)) *cobra.Command {
	pf := addProgressFlags(cmd)
	cmd.Args = cobra.MinimumNArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return each(cmd, args, func(c *client.Client, name string) error {
			line, err := withProgress(cmd, pf, func(ctx context.Context) (string, error) { return op(ctx, c, name) })
			if err != nil {
				return bootFailure(err, name, false)
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		})
	}
	return cmd
}

func newVMStartCmd() *cobra.Command {
	return vmOpCmd(&cobra.Command{Use: "start NAME...", Short: "Boot stopped VMs and wait until they answer SSH"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			vm, err := c.StartVM(ctx, name)
			return fmt.Sprintf("%s is running at %s", vm.Name, vm.IP), err
		})
}

func newVMStopCmd() *cobra.Command {
	var force bool
	cmd := vmOpCmd(&cobra.Command{Use: "stop NAME...", Short: "Stop VMs (ACPI power-off, then kill after a timeout)"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			vm, err := c.StopVM(ctx, name, force)
			return fmt.Sprintf("%s is %s", vm.Name, vm.State), err
		})
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the VMM at once instead of asking the guest to power off")
	return cmd
}

func newVMRestartCmd() *cobra.Command {
	return vmOpCmd(&cobra.Command{Use: "restart NAME...", Short: "Stop and start VMs"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			vm, err := c.RestartVM(ctx, name)
			return fmt.Sprintf("%s is running at %s", vm.Name, vm.IP), err
		})
}

func newVMPauseCmd() *cobra.Command {
	return vmOpCmd(&cobra.Command{Use: "pause NAME...", Short: "Freeze running VMs where they are (their memory stays; vm resume lets them go on)"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			vm, err := c.PauseVM(ctx, name)
			return fmt.Sprintf("%s is %s", vm.Name, vm.State), err
		})
}

func newVMResumeCmd() *cobra.Command {
	return vmOpCmd(&cobra.Command{Use: "resume NAME...", Short: "Let paused VMs run again (their clock is put right)"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			vm, err := c.ResumeVM(ctx, name)
			return fmt.Sprintf("%s is %s", vm.Name, vm.State), err
		})
}

func newVMRemoveCmd() *cobra.Command {
	var force bool
	cmd := vmOpCmd(&cobra.Command{Use: "rm NAME...", Aliases: []string{"delete"}, Short: "Delete VMs and their disks"},
		func(ctx context.Context, c *client.Client, name string) (string, error) {
			return "deleted " + name, c.DeleteVM(ctx, name, force)
		})
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop running VMs first (kills them)")
	return cmd
}
