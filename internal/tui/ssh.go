package tui

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/bangerhq/banger/internal/api"
)

type (
	sshInfoMsg struct {
		name string
		info api.SSHInfo
		err  error
	}
	sshDoneMsg struct {
		name string
		err  error
	}
	shellDoneMsg struct {
		name string
		err  error
	}
	pingMsg struct {
		name   string
		r      api.PingResult
		err    error
		sshErr error
	}
)

// sshCmd fetches the VM's SSH info; onSSHInfo then hands the terminal to ssh.
func (m *Model) sshCmd(name string) tea.Cmd {
	if m.sshBusy != "" {
		return nil
	}
	m.sshBusy = name
	b, ctx := m.backend, m.ctx
	return tea.Batch(m.startSpinner(), func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := b.SSHInfo(cctx, name)
		return sshInfoMsg{name: name, info: info, err: err}
	})
}

// SSHCommand is the command the TUI runs for an SSH session to info's VM.
func (m *Model) SSHCommand(info api.SSHInfo) *exec.Cmd {
	return exec.Command(m.opts.SSHCommand, m.opts.SSHArgs(info, nil)...)
}

func (m *Model) onSSHInfo(msg sshInfoMsg) tea.Cmd {
	if msg.err != nil {
		m.sshBusy = ""
		m.setStatus(fmt.Sprintf("ssh %s: %s", msg.name, errText(msg.err)), true)
		return nil
	}
	name := msg.name
	return tea.ExecProcess(m.SSHCommand(msg.info), func(err error) tea.Msg {
		return sshDoneMsg{name: name, err: err}
	})
}

func (m *Model) onSSHDone(msg sshDoneMsg) tea.Cmd {
	if m.opts.NoRemind {
		m.onPing(pingMsg{name: msg.name, sshErr: msg.err, err: errors.New("reminder disabled")})
		return m.refresh()
	}
	b, ctx := m.backend, m.ctx
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := b.PingVM(cctx, msg.name, time.Second)
		return pingMsg{name: msg.name, r: r, err: err, sshErr: msg.err}
	}
}

// shellCmd hands the terminal to a shell in the VM through the guest
// agent (Options.ShellCommand): no sshd or guest network needed.
func (m *Model) shellCmd(name string) tea.Cmd {
	return tea.ExecProcess(m.opts.ShellCommand(name), func(err error) tea.Msg {
		return shellDoneMsg{name: name, err: err}
	})
}

// onShellDone writes how the agent shell ended in the status line.
func (m *Model) onShellDone(msg shellDoneMsg) {
	var ee *exec.ExitError
	switch {
	case errors.As(msg.err, &ee) && ee.ExitCode() != 0:
		m.setStatus(fmt.Sprintf("shell in %s exited with status %d", msg.name, ee.ExitCode()), ee.ExitCode() != 130)
	case msg.err != nil:
		m.setStatus(fmt.Sprintf("shell in %s: %s", msg.name, errText(msg.err)), true)
	default:
		m.setStatus("shell in "+msg.name+" ended", false)
	}
}

// onPing writes the post-SSH status line: how ssh ended and, when the guest
// agent still answers, the same reminder `banger vm ssh` prints.
func (m *Model) onPing(msg pingMsg) {
	m.sshBusy = ""
	var parts []string
	isErr := false
	var ee *exec.ExitError
	switch {
	case errors.As(msg.sshErr, &ee):
		parts = append(parts, fmt.Sprintf("ssh exited with status %d", ee.ExitCode()))
		isErr = ee.ExitCode() == 255
	case msg.sshErr != nil:
		parts = append(parts, fmt.Sprintf("run ssh (is openssh-client installed?): %s", errText(msg.sshErr)))
		isErr = true
	}
	if msg.err == nil && msg.r.Alive {
		parts = append(parts, m.opts.Reminder(msg.r))
	} else if len(parts) == 0 {
		parts = append(parts, "ssh session to "+msg.name+" ended")
	}
	m.setStatus(strings.Join(parts, "; "), isErr)
}
