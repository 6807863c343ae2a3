package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
)

func newVMSSHCmd() *cobra.Command {
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
	return cmd
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
