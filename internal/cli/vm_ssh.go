package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/guestssh"
	"github.com/bangerhq/banger/internal/paths"
)

func newVMSSHCmd() *cobra.Command {
	var noRemind bool
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND ARGS...]",
		Short: "Open a shell in a VM, or run a command there",
		Long: "Runs OpenSSH with the daemon's key and the VM's pinned host key.\n" +
			"The exit status is the remote command's.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			info, err := c.SSHInfo(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ssh := exec.CommandContext(cmd.Context(), "ssh", guestssh.Args(info, args[1:])...)
			ssh.Stdin, ssh.Stdout, ssh.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = ssh.Run()
			if !noRemind && remindEnabled() {
				remind(cmd, c, args[0])
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &ExitError{Code: ee.ExitCode()}
			}
			if err != nil {
				return fmt.Errorf("run ssh (is openssh-client installed?): %w", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noRemind, "no-remind", false, "do not remind that the VM is still running when ssh exits")
	return cmd
}

// RemindEnabled is remindEnabled, for the TUI's command (package tuicmd).
func RemindEnabled() bool { return remindEnabled() }

// remindEnabled reads the config key ssh.remind (default on).
func remindEnabled() bool {
	dirs, err := paths.Resolve()
	if err != nil {
		return true
	}
	cfg, err := config.Load(dirs.ConfigFile())
	return err != nil || cfg.RemindAfterSSH()
}

// remind asks the guest itself (vm.ping) whether it is still alive after an
// SSH session and, if so, tells the user on stderr how to stop it.
func remind(cmd *cobra.Command, c *client.Client, name string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 2*time.Second)
	defer cancel()
	r, err := c.PingVM(ctx, name, time.Second)
	if os.Getenv("BANGER_DEBUG") != "" {
		defer func() {
			fmt.Fprintf(cmd.ErrOrStderr(), "banger: reminder check took %.1f ms\n", float64(time.Since(start).Microseconds())/1000)
		}()
	}
	if err != nil || !r.Alive {
		return
	}
	fmt.Fprintln(cmd.ErrOrStderr(), guestssh.Reminder(r))
}
