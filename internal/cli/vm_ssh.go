package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/config"
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
			ssh := exec.CommandContext(cmd.Context(), "ssh", SSHArgs(info, args[1:])...)
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
	fmt.Fprintln(cmd.ErrOrStderr(), Reminder(r))
}

// Reminder is the message printed when a VM is still running after SSH.
func Reminder(r api.PingResult) string {
	up := time.Duration(r.UptimeSeconds * float64(time.Second))
	return fmt.Sprintf("VM %q is still running (up %s). Stop it with: banger vm stop %s", r.Name, humanDuration(up), r.Name)
}

// SSHArgs is the OpenSSH argument list for info, followed by the remote
// command. Host keys are checked strictly against the VM's pinned key.
func SSHArgs(info api.SSHInfo, command []string) []string {
	args := []string{
		"-i", info.IdentityFile,
		"-p", strconv.Itoa(info.Port),
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + info.KnownHostsFile,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + info.HostKeyAlias,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR",
	}
	if len(command) == 0 {
		args = append(args, "-t")
	}
	args = append(args, info.User+"@"+info.Host)
	if len(command) > 0 {
		// ssh joins its arguments with spaces into one string for the
		// remote shell; quote each so `-- sh -c 'exit 3'` means what it says.
		quoted := make([]string, len(command))
		for i, a := range command {
			quoted[i] = shellQuote(a)
		}
		args = append(args, "--", strings.Join(quoted, " "))
	}
	return args
}

// shellQuote quotes s for a POSIX shell; plain words are left as they are.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
