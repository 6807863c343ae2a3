package proc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command is a VMM process to launch with Launch.
type Command struct {
	// Argv is the command line, the binary (a path) first.
	Argv []string
	// Files are inherited as descriptors 3, 4, ... in this order; the
	// caller keeps (and closes) its own copies.
	Files []*os.File
	// Output is the file that receives the process's stderr, and its
	// stdout unless Stdout is set, appended (created with mode 0600 when
	// missing); stdin is /dev/null.
	Output string
	// Stdout, when set, is the file that receives stdout instead, appended
	// (Firecracker's serial console).
	Stdout string
	// Credential, when set, is the uid, gid and supplementary groups the
	// process runs as from its first instruction (set between fork and
	// exec, so nothing runs with the launcher's privileges).
	Credential *syscall.Credential
	// Env is the process's environment; nil means an empty one (a VMM
	// needs none, and the daemon's may hold secrets).
	Env []string
	// Log receives the reaper's note when the process exits; nil discards it.
	Log *slog.Logger
}

// Child is a launched VMM process. While the launcher lives it is the
// launcher's child, reaped by a goroutine as soon as it exits, so it never
// lingers as a zombie; it runs in a session of its own, so it survives the
// launcher exiting or being killed (it is then re-parented), and is found
// again by PID and StartTime.
type Child struct {
	PID       int
	StartTime uint64

	name     string // the binary's base name, for errors
	output   string
	outStart int64
	exited   chan struct{}
	status   error // set before exited closes
}

// Launch starts cmd in a new session (no controlling terminal, no signals
// aimed at the launcher's process group), with the working directory /,
// cmd.Credential when set, only cmd.Env, and no Pdeathsig (a VMM must
// outlive the daemon). It returns once the process runs.
func Launch(cmd Command) (*Child, error) {
	log := cmd.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out, err := os.OpenFile(cmd.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open output file: %w", err)
	}
	defer out.Close()
	c := &Child{name: filepath.Base(cmd.Argv[0]), output: cmd.Output, exited: make(chan struct{})}
	if fi, err := out.Stat(); err == nil {
		c.outStart = fi.Size()
	}
	stdout := out
	if cmd.Stdout != "" {
		if stdout, err = os.OpenFile(cmd.Stdout, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("open stdout file: %w", err)
		}
		defer stdout.Close()
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	x := exec.Command(cmd.Argv[0], cmd.Argv[1:]...)
	x.Stdin, x.Stdout, x.Stderr = devNull, stdout, out
	x.ExtraFiles = cmd.Files
	x.Dir = "/"
	x.Env = cmd.Env
	if x.Env == nil {
		x.Env = []string{}
	}
	x.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cmd.Credential}
	if err := CloseOnExec(); err != nil {
		return nil, fmt.Errorf("keep the daemon's descriptors from the vmm: %w", err)
	}
	if err := x.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", cmd.Argv[0], err)
	}
	c.PID = x.Process.Pid
	// Read before the reaper runs: until then even a dead child keeps its
	// /proc entry.
	start, startErr := StartTime(c.PID)
	c.StartTime = start
	go func() {
		c.status = x.Wait()
		log.Debug("vmm process exited", "pid", c.PID, "status", c.status)
		close(c.exited)
	}()
	if startErr != nil {
		Kill(c.PID, syscall.SIGKILL) // not reaped yet: the pid is still ours
		<-c.exited
		return nil, fmt.Errorf("%s pid %d: %w", cmd.Argv[0], c.PID, startErr)
	}
	return c, nil
}

// CloseOnExec marks every descriptor above stderr close-on-exec. Go opens
// its own that way, but a descriptor the process inherited from whoever
// started it is not, and would reach what it starts (a VMM; a daemon the
// CLI starts, which would hold its caller's lock file for its whole life);
// files passed to a child explicitly are passed anyway (dup2 clears the
// flag on the copies).
func CloseOnExec() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Kernels before 5.11.
	fds, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	for _, e := range fds {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// Exited is closed once the process has exited and been reaped.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// ExitStatus is the process's wait status; valid once Exited is closed.
func (c *Child) ExitStatus() error { return c.status }

// Kill sends SIGKILL (unless the process already exited) and waits up to
// wait for it to be reaped; it reports whether it was.
func (c *Child) Kill(wait time.Duration) bool {
	select {
	case <-c.exited:
		return true
	default:
	}
	Signal(c.PID, c.StartTime, syscall.SIGKILL)
	select {
	case <-c.exited:
		return true
	case <-time.After(wait):
		return false
	}
}

// OutputTail is up to the last n bytes this launch wrote to its output
// file, from a line start, or "" when it wrote nothing.
func (c *Child) OutputTail(n int64) string {
	return FileTail(c.output, c.outStart, n)
}

// ExitError is an error for a process that exited before it was ready:
// what it was waiting for, the exit status and the end of its output.
func (c *Child) ExitError(what string) error {
	err := fmt.Errorf("%s exited before %s (%v)", c.name, what, c.status)
	if tail := c.OutputTail(2000); tail != "" {
		err = fmt.Errorf("%w; its output (%s) ends with:\n%s", err, c.output, tail)
	}
	return err
}

// FileTail returns up to the last n bytes of the file at p past offset
// from, starting at a line start, or "" when there are none or the file is
// unreadable.
func FileTail(p string, from, n int64) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, from, 0)
	if off >= fi.Size() {
		return ""
	}
	b := make([]byte, fi.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) && k == 0 {
		return ""
	}
	s := string(b[:k])
	if off > from {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(s)
}
