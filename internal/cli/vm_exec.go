package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/guestexec"
)

func newVMExecCmd() *cobra.Command {
	var p guestexec.Params
	cmd := &cobra.Command{
		Use:   "exec NAME [-i] [-t] [-e K=V]... [-w DIR] -- COMMAND ARGS...",
		Short: "Run a command in a VM through its guest agent (no network, no sshd)",
		Long: "Runs COMMAND with ARGS exactly as given (no shell) as root in the VM, over the guest\n" +
			"agent's channel: it works with the guest network down and without sshd.\n" +
			"stdout and stderr stay apart and binary-safe; the exit status is the command's\n" +
			"(128+n when signal n killed it; 127 when it does not exist).\n\n" +
			"-i passes stdin to the command (else it reads nothing). -t runs it on a\n" +
			"terminal: with a terminal here, this one is put in raw mode and window size\n" +
			"changes follow; Ctrl-C then travels as a keystroke. Without -t, Ctrl-C (and\n" +
			"SIGTERM, SIGHUP, SIGQUIT) are sent to the command's process group.\n\n" +
			"A shell: banger vm exec -it NAME -- bash -l",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("put the command after --: banger vm exec NAME [flags] -- COMMAND ARGS...")
			}
			p.Argv = args[1:]
			if err := p.Validate(); err != nil {
				return err
			}
			return runExec(cmd, args[0], p)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&p.Stdin, "interactive", "i", false, "pass stdin to the command")
	f.BoolVarP(&p.TTY, "tty", "t", false, "run the command on a terminal")
	f.StringArrayVarP(&p.Env, "env", "e", nil, "set an environment variable `K=V` (repeatable)")
	f.StringVarP(&p.Dir, "workdir", "w", "", "working `DIR` in the guest (default: root's home)")
	return cmd
}

// runExec runs p in VM name with this process's stdin, stdout and stderr,
// and returns the command's exit status as an *ExitError.
func runExec(cmd *cobra.Command, name string, p guestexec.Params) error {
	ctx := cmd.Context()
	c, err := connect(ctx)
	if err != nil {
		return err
	}
	stdinFd := int(os.Stdin.Fd())
	localTerm := p.TTY && term.IsTerminal(stdinFd)
	if p.TTY {
		p.Term = os.Getenv("TERM")
		if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			p.Rows, p.Cols = uint16(h), uint16(w)
		} else if w, h, err := term.GetSize(stdinFd); err == nil {
			p.Rows, p.Cols = uint16(h), uint16(w)
		}
	}
	raw, _ := json.Marshal(p)
	sc, _, err := c.ExecVM(ctx, api.VMExecParams{Name: name, Exec: raw})
	if err != nil {
		return err
	}
	defer sc.Close()

	s := guestexec.Streams{Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
	if p.Stdin {
		s.Stdin = cmd.InOrStdin()
	}
	sigs := make(chan os.Signal, 4)
	fwd := make(chan syscall.Signal, 4)
	s.Signals = fwd
	if localTerm {
		old, err := term.MakeRaw(stdinFd)
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(stdinFd, old)
		resize := make(chan [2]uint16, 1)
		s.Resize = resize
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(stdinFd); err == nil {
					select {
					case resize <- [2]uint16{uint16(h), uint16(w)}:
					default:
					}
				}
			}
		}()
		// In raw mode ^C is a byte for the guest's terminal; signals
		// sent to this process still go to the command.
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	} else {
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	}
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			fwd <- sig.(syscall.Signal)
		}
	}()
	s.OnError = func(msg string) { fmt.Fprintln(cmd.ErrOrStderr(), "banger: "+msg) }
	code, err := guestexec.Run(sc, s)
	if err != nil {
		if errors.Is(err, guestexec.ErrLost) {
			return fmt.Errorf("vm exec %s: %w (see `banger vm ping %s`)", name, err, name)
		}
		return fmt.Errorf("vm exec %s: %w", name, err)
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
