package guestexec

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/bangerhq/banger/internal/agent"
)

// basePath is PATH in the guest unless Params.Env sets one.
const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hangupGrace is how long a command whose host went away has between
// SIGHUP and SIGKILL.
const hangupGrace = 5 * time.Second

// Handler is the guest agent's handler for Op: it runs the command as the
// agent's user (root) and serves the frames until it exits. When the
// stream breaks first (the host went away), the command's process group
// gets SIGHUP, then SIGKILL after 5 s.
func Handler(ctx context.Context, st *agent.Stream) error {
	var p Params
	if err := st.Decode(&p); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return agent.Errorf(agent.CodeInvalid, "exec: %v", err)
	}
	fw := &frameWriter{w: st}
	// The command gets the timer slack the agent was started with, not the
	// agent's own coarse one (agent.TimerSlack).
	var r *running
	var err error
	agent.WithStartSlack(func() { r, err = start(p) })
	if err != nil {
		// Accepted anyway: the host learns why as it would from a shell.
		if aerr := st.Accept(Result{}); aerr != nil {
			return aerr
		}
		code := int32(126)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			code = 127
		}
		_ = fw.write(FrameError, []byte(err.Error()))
		return fw.write(FrameExit, i32(code))
	}
	if err := st.Accept(Result{PID: r.cmd.Process.Pid}); err != nil {
		r.kill(syscall.SIGKILL)
		r.cmd.Wait()
		return err
	}

	// Input: frames from the host, until its end or the stream's.
	hostGone := make(chan struct{})
	go func() {
		defer close(hostGone)
		r.input(st)
	}()
	// Output: pumped until the command and everyone it left holding its
	// output have closed it.
	var wg sync.WaitGroup
	for _, o := range r.outputs {
		wg.Go(func() {
			_, _ = io.Copy(streamWriter{fw, o.typ}, o.r)
		})
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-hostGone:
			r.kill(syscall.SIGHUP)
			select {
			case <-exited:
			case <-time.After(hangupGrace):
				r.kill(syscall.SIGKILL)
			}
		case <-ctx.Done():
			r.kill(syscall.SIGKILL)
		case <-exited:
		}
	}()
	wg.Wait()
	werr := r.cmd.Wait()
	close(exited)
	r.close()
	return fw.write(FrameExit, i32(int32(exitStatus(r.cmd.ProcessState, werr))))
}

// exitStatus is the command's status as a shell reports it: its exit code,
// or 128+n when signal n killed it.
func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// output is one of the command's outputs and its frame type.
type output struct {
	r   io.Reader
	typ byte
}

// running is a started command.
type running struct {
	cmd     *exec.Cmd
	tty     *os.File // the pty's master, or nil
	stdin   io.WriteCloser
	outputs []output
	closers []io.Closer
}

// start starts p's command.
func start(p Params) (*running, error) {
	env := baseEnv(p)
	path := basePath
	for _, kv := range env {
		if k, v, _ := cutEnv(kv); k == "PATH" {
			path = v
		}
	}
	bin, err := lookPath(p.Argv[0], path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Args = p.Argv
	cmd.Env = env
	cmd.Dir = p.Dir
	if cmd.Dir == "" {
		cmd.Dir = homeDir()
	}
	r := &running{cmd: cmd}
	if p.TTY {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		rows, cols := p.Rows, p.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		f, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: rows, Cols: cols}, cmd.SysProcAttr)
		if err != nil {
			return nil, fmt.Errorf("exec %s: %w", p.Argv[0], err)
		}
		r.tty = f
		r.outputs = []output{{f, FrameStdout}}
		if p.Stdin {
			r.stdin = f
		}
		r.closers = append(r.closers, f)
		return r, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.Stdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		r.stdin = w
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	r.outputs = []output{{stdout, FrameStdout}, {stderr, FrameStderr}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", p.Argv[0], err)
	}
	return r, nil
}

// input applies the host's frames until the stream ends.
func (r *running) input(st io.Reader) {
	br := bufio.NewReaderSize(st, 64<<10)
	buf := make([]byte, MaxPayload)
	stdinOpen := r.stdin != nil
	for {
		typ, payload, err := readFrame(br, buf)
		if err != nil {
			if stdinOpen && r.tty == nil {
				r.stdin.Close()
			}
			return
		}
		switch typ {
		case FrameStdin:
			if !stdinOpen {
				continue
			}
			if len(payload) == 0 {
				// End of input: a pipe closes; a terminal gets its
				// end-of-file character, as a typed ^D would.
				if r.tty != nil {
					_, _ = r.tty.Write([]byte{4})
				} else {
					r.stdin.Close()
					stdinOpen = false
				}
				continue
			}
			if _, err := r.stdin.Write(payload); err != nil && r.tty == nil {
				// The command closed its input: drop the rest.
				stdinOpen = false
			}
		case FrameResize:
			if r.tty != nil && len(payload) == 4 {
				_ = pty.Setsize(r.tty, &pty.Winsize{
					Rows: binary.BigEndian.Uint16(payload[:2]),
					Cols: binary.BigEndian.Uint16(payload[2:]),
				})
			}
		case FrameSignal:
			if len(payload) == 1 && payload[0] > 0 && payload[0] < 65 {
				r.kill(syscall.Signal(payload[0]))
			}
		}
	}
}

// kill sends sig to the command's process group (its session's, under a
// TTY): the command and what it started.
func (r *running) kill(sig syscall.Signal) {
	if r.cmd.Process == nil {
		return
	}
	pid := r.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}

func (r *running) close() {
	for _, c := range r.closers {
		c.Close()
	}
}

// baseEnv is the command's environment: root's, plus TERM under a TTY,
// plus p.Env (later entries win).
func baseEnv(p Params) []string {
	env := []string{"PATH=" + basePath, "HOME=" + homeDir(), "USER=root", "LOGNAME=root", "SHELL=" + rootShell()}
	if p.TTY {
		term := p.Term
		if term == "" {
			term = "xterm"
		}
		env = append(env, "TERM="+term)
	}
	return append(env, p.Env...)
}

// homeDir is root's home from /etc/passwd, or /root.
func homeDir() string {
	if f := rootPasswd(); len(f) > 5 && f[5] != "" {
		return f[5]
	}
	return "/root"
}

// rootShell is root's shell from /etc/passwd, or /bin/sh.
func rootShell() string {
	if f := rootPasswd(); len(f) > 6 && f[6] != "" {
		return f[6]
	}
	return "/bin/sh"
}

func rootPasswd() []string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 7 && f[2] == "0" {
			return f
		}
	}
	return nil
}

// lookPath finds name in path (a PATH value) as a shell would: a name
// with a slash is used as is.
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("exec %s: %w", name, err)
		}
		return name, nil
	}
	for dir := range strings.SplitSeq(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %s: %w in PATH (%s)", name, exec.ErrNotFound, path)
}
