// Package guestssh is how banger reaches a guest over SSH: the OpenSSH
// arguments (the VM's own key, its pinned host key) and the reminder shown
// when a VM is still running after a session. `banger vm ssh` and the TUI
// both use it, so they run the same command and say the same thing.
package guestssh

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

// Reminder is the message shown when a VM is still running after SSH.
func Reminder(r api.PingResult) string {
	up := time.Duration(r.UptimeSeconds * float64(time.Second))
	return fmt.Sprintf("VM %q is still running (up %s). Stop it with: banger vm stop %s", r.Name, units.Duration(up), r.Name)
}

// Args is the OpenSSH argument list for info, followed by the remote
// command. Host keys are checked strictly against the VM's pinned key.
func Args(info api.SSHInfo, command []string) []string {
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
