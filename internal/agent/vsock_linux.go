package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrVsockUnavailable is wrapped by ListenVsock's and DialVsock's errors when
// the kernel has no AF_VSOCK support (not built in, module missing).
var ErrVsockUnavailable = errors.New("this kernel has no AF_VSOCK support")

// VsockAddr is an AF_VSOCK address: a context id and a port.
type VsockAddr struct {
	CID  uint32
	Port uint32
}

// Network returns "vsock".
func (a VsockAddr) Network() string { return "vsock" }

// String returns "vsock:CID:PORT".
func (a VsockAddr) String() string {
	return "vsock:" + strconv.FormatUint(uint64(a.CID), 10) + ":" + strconv.FormatUint(uint64(a.Port), 10)
}

// ListenVsock listens for AF_VSOCK stream connections on port, for any local
// CID (VMADDR_CID_ANY). Ports below 1024 need CAP_NET_BIND_SERVICE; port
// unix.VMADDR_PORT_ANY picks a free one, which Addr reports. The error wraps
// ErrVsockUnavailable when the kernel lacks AF_VSOCK. Accepted connections
// are net.Conns with working deadlines; closing the listener makes a blocked
// Accept return net.ErrClosed.
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, vsockErr(err))
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: bind: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	addr := VsockAddr{CID: unix.VMADDR_CID_ANY, Port: port}
	if sa, err := unix.Getsockname(fd); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			addr = VsockAddr{CID: vm.CID, Port: vm.Port}
		}
	}
	// A non-blocking fd makes os.NewFile register it with the runtime
	// poller, so Accept parks a goroutine instead of a thread.
	f := os.NewFile(uintptr(fd), addr.String())
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return &vsockListener{f: f, rc: rc, addr: addr}, nil
}

type vsockListener struct {
	f      *os.File
	rc     syscall.RawConn
	addr   VsockAddr
	closed atomic.Bool
}

func (l *vsockListener) Accept() (net.Conn, error) {
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	})
	if l.closed.Load() {
		if aerr == nil && err == nil {
			unix.Close(nfd)
		}
		return nil, fmt.Errorf("accept on %s: %w", l.addr, net.ErrClosed)
	}
	if err == nil {
		err = aerr
	}
	if err != nil {
		return nil, fmt.Errorf("accept on %s: %w", l.addr, err)
	}
	remote := VsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = VsockAddr{CID: vm.CID, Port: vm.Port}
	}
	return &vsockConn{f: os.NewFile(uintptr(nfd), remote.String()), local: l.addr, remote: remote}, nil
}

func (l *vsockListener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is a connected AF_VSOCK socket; the *os.File gives it the
// runtime poller and thus deadlines.
type vsockConn struct {
	f             *os.File
	local, remote VsockAddr
}

func (c *vsockConn) Read(b []byte) (int, error)         { return c.f.Read(b) }
func (c *vsockConn) Write(b []byte) (int, error)        { return c.f.Write(b) }
func (c *vsockConn) Close() error                       { return c.f.Close() }
func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// DialVsock connects to port on the vsock context cid through the kernel's
// AF_VSOCK (for example a QEMU guest with a vhost-vsock device; Firecracker
// guests are reached through their hybrid vsock socket instead: see the
// Firecracker driver's DialVsock). ctx bounds the connect.
// The error wraps ErrVsockUnavailable when the kernel lacks AF_VSOCK.
func DialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	remote := VsockAddr{CID: cid, Port: port}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", remote, vsockErr(err))
	}
	f := os.NewFile(uintptr(fd), remote.String())
	conn := &vsockConn{f: f, remote: remote}
	if err := vsockConnect(ctx, f, fd, remote); err != nil {
		f.Close()
		return nil, fmt.Errorf("dial %s: %w", remote, err)
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			conn.local = VsockAddr{CID: vm.CID, Port: vm.Port}
		}
	}
	return conn, nil
}

// vsockConnect runs a non-blocking connect on fd (owned by f) and waits for
// it through the runtime poller, bounded by ctx.
func vsockConnect(ctx context.Context, f *os.File, fd int, remote VsockAddr) error {
	err := unix.Connect(fd, &unix.SockaddrVM{CID: remote.CID, Port: remote.Port})
	if err == nil {
		return nil
	}
	if err != unix.EINPROGRESS {
		return err
	}
	release := bindDeadline(ctx, f)
	defer release()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = err
			return true
		}
		if n == 0 {
			// Writable with no error: either connected or not done
			// yet; getpeername tells which.
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false
			}
			return true
		}
		soErr = syscall.Errno(n)
		return true
	})
	if werr != nil {
		return ctxError(ctx, werr)
	}
	return soErr
}

// vsockErr marks the errors that mean "no AF_VSOCK in this kernel".
func vsockErr(err error) error {
	if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) {
		return fmt.Errorf("%w: %w", ErrVsockUnavailable, err)
	}
	return err
}
