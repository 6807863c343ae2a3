package vmm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/safesocket"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// CheckPaths validates the parts of spec every driver needs alike: the VM
// folder, kernel, initrd and disk exist (absolute paths, the files
// regular), the console log's folder exists, the TAP name fits the kernel's
// limit, and each of sockets is absolute and fits the Unix socket limit.
// Empty optional fields (Initrd, Disk, ConsoleLog, TAP) are skipped. It
// returns every problem; drivers add their own rules.
func CheckPaths(spec Spec, sockets ...string) []error {
	var errs []error
	abs := func(what, p string) bool {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: path must be absolute", what, p))
			return false
		}
		return true
	}
	if abs("vm folder", spec.Dir) {
		if fi, err := os.Stat(spec.Dir); err != nil {
			errs = append(errs, fmt.Errorf("vm folder: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("vm folder %s is not a directory", spec.Dir))
		}
	}
	file := func(what, p string) {
		if !abs(what, p) {
			return
		}
		if fi, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		} else if !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("%s %s is not a regular file", what, p))
		}
	}
	file("kernel", spec.Kernel)
	if spec.Initrd != "" {
		file("initrd", spec.Initrd)
	}
	if spec.Disk != "" {
		file("disk", spec.Disk)
	}
	if spec.DiskBacking != "" {
		if spec.Disk == "" {
			errs = append(errs, errors.New("disk backing without a disk"))
		}
		file("disk backing", spec.DiskBacking)
	}
	if spec.ConsoleLog != "" && abs("console log", spec.ConsoleLog) {
		if _, err := os.Stat(filepath.Dir(spec.ConsoleLog)); err != nil {
			errs = append(errs, fmt.Errorf("console log folder: %w", err))
		}
	}
	if spec.TAP != "" && len(spec.TAP) > unix.IFNAMSIZ-1 {
		errs = append(errs, fmt.Errorf("tap name %q: longer than %d bytes", spec.TAP, unix.IFNAMSIZ-1))
	}
	for _, s := range sockets {
		if s == "" || !abs("socket", s) {
			continue
		}
		if err := paths.CheckSocketPath(s); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ClearStaleSockets clears each of paths with safesocket.ClearStale (a
// stale socket is removed, one that answers is an error naming owner);
// empty ones are skipped. It stops at the first that cannot be cleared.
func ClearStaleSockets(owner string, paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := safesocket.ClearStale(p, owner); err != nil {
			return err
		}
	}
	return nil
}

// RemoveFiles removes paths, ignoring empty ones and ones already gone, and
// joins the other errors.
func RemoveFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopProcess is the Stop every driver shares: unless the process of st is
// gone already, it stops it with proc.Stop (ask the guest through s.Ask,
// wait s.Timeout, then SIGTERM and SIGKILL), then removes files (sockets,
// pid files) whatever happened; errors are joined. A VM that is not running
// gives nil once its files are gone.
func StopProcess(ctx context.Context, st State, force bool, s proc.Shutdown, files ...string) error {
	var errs []error
	if proc.Alive(st.PID, st.StartTime) {
		if err := proc.Stop(ctx, st.PID, st.StartTime, force, s); err != nil {
			errs = append(errs, err)
		}
	}
	if err := RemoveFiles(files...); err != nil {
		errs = append(errs, fmt.Errorf("remove vmm files: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop %s pid %d: %w", s.Name, st.PID, err)
	}
	return nil
}

// CheckAdoptable is the start of every driver's Recover: st must belong to
// the driver called name (or name none), and its process must be the one
// launched (see proc.Alive); the error wraps ErrNotRunning when it is gone.
func CheckAdoptable(st State, name string) error {
	if st.Driver != "" && st.Driver != name {
		return fmt.Errorf("recover: state belongs to driver %q, not %s", st.Driver, name)
	}
	if !proc.Alive(st.PID, st.StartTime) {
		return fmt.Errorf("recover %s pid %d: %w", name, st.PID, ErrNotRunning)
	}
	return nil
}
