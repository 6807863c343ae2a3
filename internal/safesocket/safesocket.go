// Package safesocket is the one place banger handles the Unix sockets it
// serves (the daemon's) or has a VMM serve (QMP, Firecracker's API, the
// agent channel): a leftover socket is probed before it is removed, so a
// live one is never stolen, and a socket the daemon listens on has mode
// 0600 from its first moment (tailscale's safesocket does the same).
package safesocket

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/paths"
)

// ErrInUse is wrapped by the errors of ClearStale and Listen when a process
// accepts connections on the socket.
var ErrInUse = errors.New("socket in use")

// probeTimeout bounds the dial that tells a live socket from a stale one. A
// stale socket refuses at once; a live process accepts at once even when it
// is busy (the kernel completes the connection into its backlog).
const probeTimeout = time.Second

// ClearStale removes a leftover socket at p, but only when the kernel
// refuses a connection to it (ECONNREFUSED: nothing listens). A missing
// file is fine. A socket that accepts a connection belongs to a running
// process: the error wraps ErrInUse and names owner, the process that is
// probably there (for example "an earlier qemu of this VM"). Any other
// outcome of the probe (a timeout, a permission error), and a file that is
// not a socket, is an error and leaves the file in place.
func ClearStale(p, owner string) error {
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
	c, err := net.DialTimeout("unix", p, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s answers (%w): a process (%s?) is still using it", p, ErrInUse, owner)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe stale socket %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Listen listens on a Unix socket at p that only its owner may use (mode
// 0600, set through the umask so that no other user can connect in
// between). It checks p against the kernel's path limit first, and clears
// a stale socket at p (see ClearStale; a live one gives an error wrapping
// ErrInUse). Closing the listener does not remove the socket file: the
// caller removes it when it is done.
func Listen(p, owner string) (*net.UnixListener, error) {
	if err := paths.CheckSocketPath(p); err != nil {
		return nil, err
	}
	if err := ClearStale(p, owner); err != nil {
		return nil, err
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", p, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(p, 0o600); err != nil {
		ln.Close()
		os.Remove(p)
		return nil, fmt.Errorf("listen on %s: %w", p, err)
	}
	return ln, nil
}
