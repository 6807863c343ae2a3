package vmm

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// ClearStaleSocket removes a leftover socket at p, but only when nothing
// answers on it: a socket that accepts a connection belongs to a running
// process (owner names it in the error, e.g. "qemu"). A missing file is
// fine; a file that is not a socket is an error.
func ClearStaleSocket(p, owner string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it by hand", p)
	}
	c, err := net.DialTimeout("unix", p, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s answers: a process (an earlier %s of this VM?) is still using it", p, owner)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe stale socket %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
