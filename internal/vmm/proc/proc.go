// Package proc holds the process helpers VMM drivers share: identifying a
// process by (pid, start time) so a recycled pid is never mistaken for the
// VMM we launched, waiting for a process that is not our child, and
// signalling it.
//
// VMM processes outlive the daemon that launched them, so after a daemon
// restart they are no longer its children: wait(2) cannot be used, and a pid
// alone is not an identity. Every function here that acts on a process takes
// the start time recorded at launch (field 22 of /proc/PID/stat) and checks
// it.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoProcess is returned by StartTime when no process with that pid exists.
var ErrNoProcess = errors.New("no such process")

// DefaultPoll is the polling interval WaitExit uses when given 0.
const DefaultPoll = 100 * time.Millisecond

// stat is the part of /proc/PID/stat the helpers need.
type stat struct {
	state     byte
	startTime uint64
	// cpuTicks is the CPU time used, user and system, in clock ticks.
	cpuTicks uint64
}

func readStat(pid int) (stat, error) {
	if pid <= 0 {
		return stat{}, fmt.Errorf("read stat of pid %d: %w", pid, ErrNoProcess)
	}
	b, err := readProcFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return stat{}, fmt.Errorf("read stat of pid %d: %w", pid, ErrNoProcess)
		}
		return stat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// readProcFile reads a small /proc file with three system calls (open,
// read, close) and no poller registration: liveness checks read one per
// running VM on every `vm ls`, where os.ReadFile's five calls showed. A
// /proc/PID/stat line fits the buffer (comm is at most 64 bytes).
func readProcFile(p string) ([]byte, error) {
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, 1024)
	n, err := syscall.Read(fd, buf)
	for err == syscall.EINTR {
		n, err = syscall.Read(fd, buf)
	}
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: p, Err: err}
	}
	return buf[:max(n, 0)], nil
}

// parseStat parses a /proc/PID/stat line. Field 2 (comm) is in parentheses
// and may itself contain spaces and parentheses, so the fields after it are
// found from the LAST ')' in the line.
func parseStat(b []byte) (stat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 || bytes.IndexByte(b, '(') < 0 {
		return stat{}, errors.New("no comm field")
	}
	// After ") " come fields 3 (state), 4, ... ; field N is at index N-3.
	rest := bytes.Fields(b[end+1:])
	const stateIdx, utimeIdx, stimeIdx, startIdx = 3 - 3, 14 - 3, 15 - 3, 22 - 3
	if len(rest) <= startIdx {
		return stat{}, fmt.Errorf("only %d fields after comm", len(rest))
	}
	if len(rest[stateIdx]) != 1 {
		return stat{}, fmt.Errorf("bad state field %q", rest[stateIdx])
	}
	var n [3]uint64
	for i, idx := range []int{utimeIdx, stimeIdx, startIdx} {
		v, err := strconv.ParseUint(string(rest[idx]), 10, 64)
		if err != nil {
			return stat{}, fmt.Errorf("bad field %d: %w", idx+3, err)
		}
		n[i] = v
	}
	return stat{state: rest[stateIdx][0], cpuTicks: n[0] + n[1], startTime: n[2]}, nil
}

// clockTicks is the unit of /proc/PID/stat's times (USER_HZ, 100 on
// every Linux architecture banger runs on).
const clockTicks = 100

// CPUTime returns the CPU time pid has used so far, user and system
// (fields 14 and 15 of /proc/PID/stat), at the 10 ms resolution of clock
// ticks. It returns an error wrapping ErrNoProcess when the process does
// not exist.
func CPUTime(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return time.Duration(st.cpuTicks) * time.Second / clockTicks, nil
}

// StartTime returns the start time of pid in clock ticks since boot (field
// 22 of /proc/PID/stat). It returns an error wrapping ErrNoProcess when the
// process does not exist.
func StartTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.startTime, nil
}

// Alive reports whether pid exists, is not a zombie (or dead), and started
// at startTime. A recycled pid has a different start time and is reported as
// not alive.
func Alive(pid int, startTime uint64) bool {
	st, err := readStat(pid)
	if err != nil {
		return false
	}
	return st.state != 'Z' && st.state != 'X' && st.startTime == startTime
}

// openChecked opens a pidfd for pid and confirms that it refers to the
// process that started at startTime: checking the start time after the
// pidfd exists closes the window in which the pid could be recycled. It
// returns -1 and a nil error when that process is gone.
func openChecked(pid int, startTime uint64) (int, error) {
	if pid <= 0 {
		return -1, nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, nil
		}
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	st, err := readStat(pid)
	if err != nil || st.startTime != startTime {
		unix.Close(fd)
		if err != nil && !errors.Is(err, ErrNoProcess) {
			return -1, err
		}
		return -1, nil
	}
	return fd, nil
}

// WaitExit blocks until the process (pid, startTime) has exited, which
// includes having become a zombie, and returns nil; it returns nil at once
// when that process is already gone or the pid now belongs to another
// process. It works for processes that are not our children. It uses a
// pidfd when the kernel supports one and otherwise polls every poll
// (DefaultPoll when 0). It returns an error wrapping ctx.Err() when ctx ends
// first.
func WaitExit(ctx context.Context, pid int, startTime uint64, poll time.Duration) error {
	if poll <= 0 {
		poll = DefaultPoll
	}
	fd, err := openChecked(pid, startTime)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
			return waitPoll(ctx, pid, startTime, poll)
		}
		return fmt.Errorf("wait for pid %d: %w", pid, err)
	}
	if fd < 0 {
		return nil
	}
	defer unix.Close(fd)
	// A pidfd polls readable once the process has exited. Poll in slices
	// so ctx is honoured without another goroutine.
	for {
		ms := int(poll / time.Millisecond)
		if dl, ok := ctx.Deadline(); ok {
			// The context's timer may fire a little after its deadline:
			// never compute a negative timeout, which poll(2) reads as
			// "wait forever".
			left := time.Until(dl)
			if left <= 0 {
				return fmt.Errorf("wait for pid %d to exit: %w", pid, context.DeadlineExceeded)
			}
			if left < poll {
				ms = int(left/time.Millisecond) + 1
			}
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for pid %d: poll pidfd: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for pid %d to exit: %w", pid, err)
		}
	}
}

func waitPoll(ctx context.Context, pid int, startTime uint64, poll time.Duration) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	for Alive(pid, startTime) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for pid %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Kill sends sig to pid without any identity check; use it only for a pid
// that cannot have been recycled (for example a child not yet reaped). A
// process that no longer exists is not an error.
func Kill(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("kill pid %d: invalid pid", pid)
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d with %v: %w", pid, sig, err)
	}
	return nil
}

// Signal sends sig to the process (pid, startTime) and to no other: it goes
// through a pidfd whose identity is checked first, so a recycled pid is
// never signalled. A process that is gone (or whose pid was recycled) is not
// an error.
func Signal(pid int, startTime uint64, sig syscall.Signal) error {
	fd, err := openChecked(pid, startTime)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			// Kernels before 5.3: best effort with a check-then-kill race.
			if !Alive(pid, startTime) {
				return nil
			}
			return Kill(pid, sig)
		}
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	if fd < 0 {
		return nil
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal pid %d with %v: %w", pid, sig, err)
	}
	return nil
}

// Holding returns the processes, other than this one, that have the file
// at path open, each with its start time, found through /proc/PID/fd: a
// descriptor whose link reads path (as it was opened) and that is the
// same device and inode. Processes whose descriptors this one may not read
// are not seen. A VMM opens nothing by path, but holds its VM's disk: this
// finds a VMM whose pid was never recorded. A descriptor named one of
// aliases instead counts too when it is the same file: a jailed VMM names
// the disk by its path in its chroot.
func Holding(path string, aliases ...string) ([]ID, error) {
	path = filepath.Clean(path)
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []ID
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := "/proc/" + e.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			// Only a descriptor named path is looked at: stat on any
			// other could hang (a file of a dead network mount).
			if l, err := os.Readlink(dir + fd.Name()); err != nil || (l != path && !slices.Contains(aliases, l)) {
				continue
			}
			var st syscall.Stat_t
			if syscall.Stat(dir+fd.Name(), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
				if start, err := StartTime(pid); err == nil {
					out = append(out, ID{PID: pid, StartTime: start})
				}
				break
			}
		}
	}
	return out, nil
}

// ID is a process: its pid and start time.
type ID struct {
	PID       int
	StartTime uint64
}
