// Package tui is `banger tui`: a Bubble Tea terminal UI that lists VMs and
// images with live state, shows one VM's details, and runs the daemon's
// actions (create, start, stop, restart, delete, console log, SSH) from the
// keyboard.
//
// The model talks to bangerd only through Backend, which *client.Client
// satisfies, so tests drive it against a real daemon or anything else.
package tui

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/guestssh"
	"github.com/bangerhq/banger/internal/units"
)

// Backend is the subset of the daemon's API the TUI uses. Errors the daemon
// itself returned are *api.RemoteError; any other error means the daemon
// could not be reached.
type Backend interface {
	ListVMs(ctx context.Context) ([]api.VM, error)
	ListImages(ctx context.Context) ([]api.Image, error)
	CreateVM(ctx context.Context, p api.VMCreateParams) (api.VM, error)
	StartVM(ctx context.Context, name string) (api.VM, error)
	StopVM(ctx context.Context, name string, force bool) (api.VM, error)
	RestartVM(ctx context.Context, name string) (api.VM, error)
	PauseVM(ctx context.Context, name string) (api.VM, error)
	ResumeVM(ctx context.Context, name string) (api.VM, error)
	DeleteVM(ctx context.Context, name string, force bool) error
	SSHInfo(ctx context.Context, name string) (api.SSHInfo, error)
	PingVM(ctx context.Context, name string, timeout time.Duration) (api.PingResult, error)
}

var _ Backend = (*client.Client)(nil)

// Options configure a Model. Backend is required; every other field has a
// default.
type Options struct {
	// Backend is the daemon connection.
	Backend Backend
	// Reconnect, when set, is called while the daemon is unreachable to
	// get a working Backend again (the CLI's version starts bangerd).
	Reconnect func(ctx context.Context) (Backend, error)
	// SSHArgs builds the ssh argument list; default guestssh.Args, what
	// `banger vm ssh` runs.
	SSHArgs func(info api.SSHInfo, command []string) []string
	// SSHCommand is the program run for SSH; default "ssh".
	SSHCommand string
	// ShellCommand is the command the shell action runs for a VM; default
	// `banger vm exec -it NAME -- sh -c 'exec "$SHELL" -l'` with this
	// executable: a login shell through the guest agent.
	ShellCommand func(vm string) *exec.Cmd
	// Reminder is the status line shown when a VM is still running after
	// SSH; default guestssh.Reminder, what `banger vm ssh` prints.
	Reminder func(api.PingResult) string
	// NoRemind disables the post-SSH ping and reminder (config ssh.remind).
	NoRemind bool
	// ParseSize parses the disk size field ("8G"). Default: a byte count
	// with an optional K, M, G or T suffix.
	ParseSize func(string) (int64, error)
	// PollInterval is how often the VM list is refreshed; default 1s.
	PollInterval time.Duration
	// ConsoleInterval is how often the console view rereads the log;
	// default 500ms.
	ConsoleInterval time.Duration
	// Now is the clock for uptimes; default time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.SSHArgs == nil {
		o.SSHArgs = guestssh.Args
	}
	if o.SSHCommand == "" {
		o.SSHCommand = "ssh"
	}
	if o.ShellCommand == nil {
		o.ShellCommand = agentShell
	}
	if o.Reminder == nil {
		o.Reminder = guestssh.Reminder
	}
	if o.ParseSize == nil {
		o.ParseSize = units.ParseSize
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.ConsoleInterval <= 0 {
		o.ConsoleInterval = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// agentShell runs root's login shell in vm through `banger vm exec`, with
// the banger beside this executable (the TUI runs as banger-tui), else the
// one in $PATH.
func agentShell(vm string) *exec.Cmd {
	bin := "banger"
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "banger"); p != self {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				bin = p
			}
		}
	}
	return exec.Command(bin, "vm", "exec", "-it", vm, "--", "sh", "-c", `exec "${SHELL:-/bin/sh}" -l`)
}
