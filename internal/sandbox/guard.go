package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// guardConfig is the guard stage's configuration: the command to run.
type guardConfig struct {
	Path string
	Args []string
	Env  []string
	Dir  string
}

// Guard runs cmd (not started; Path, Args, Env, Dir and the standard
// streams are used) so that it, and every process it starts, ends when ctx
// is done or when this process dies, even by SIGKILL: it runs under a guard
// stage with a parent-death signal. As root the guard is PID 1 of a PID
// namespace of its own (the kernel ends the rest with it); otherwise it is a
// child subreaper that kills every process below it before it goes.
// The command keeps the host's privileges and namespaces otherwise: Guard is
// for trusted tools (mmdebstrap), not for image content.
func Guard(ctx context.Context, cmd *exec.Cmd) error {
	cfg := guardConfig{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: cmd.Dir}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	st := stageCmd{name: stageGuard, stdin: cmd.Stdin, stdout: cmd.Stdout, stderr: cmd.Stderr,
		deathSig: syscall.SIGTERM, cancelSig: syscall.SIGTERM}
	if os.Geteuid() == 0 {
		st.flags = syscall.CLONE_NEWPID
	}
	_, err := st.run(ctx, func(_ *exec.Cmd, w *os.File) error { return writeLine(w, cfg) }, func(message) error { return nil })
	return err
}

// runGuard is the guard stage.
func runGuard() error {
	ctl, msgs := stageCtl, &msgWriter{w: stageMsgs}
	// The parent-death signal (SIGTERM) was set before exec and no
	// credential changed since; check the parent is still there.
	fds := []unix.PollFd{{Fd: int32(ctl.Fd())}}
	if n, _ := unix.Poll(fds, 0); n > 0 && fds[0].Revents&unix.POLLHUP != 0 {
		return errors.New("the parent is gone")
	}
	var cfg guardConfig
	if err := readConfig(ctl, &cfg); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: read the configuration: %w", ErrSetup, err))
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: subreaper: %w", ErrSetup, err))
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		killBelow()
		os.Exit(1)
	}()
	cmd := exec.Command(cfg.Path)
	cmd.Args, cmd.Env, cmd.Dir = cfg.Args, cfg.Env, cfg.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return msgs.done(nil, err)
	}
	ws, runErr := reapUntil(cmd.Process.Pid)
	if runErr == nil {
		runErr = exitError(ws)
	}
	killBelow()
	return msgs.done(nil, runErr)
}

// killBelow kills every process below this one (all orphans of the tree
// were reparented here) until none is left. PID 1 of a namespace has
// nothing to do: its namespace ends with it.
func killBelow() {
	if os.Getpid() == 1 {
		return
	}
	self := os.Getpid()
	for range 100 {
		pids := descendants(self)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		// Reap what died (the subreaper is their parent now).
		for {
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] != "Z" {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for c, pp := range parent {
			if pp == p {
				out = append(out, c)
				walk(c)
			}
		}
	}
	walk(pid)
	return out
}
