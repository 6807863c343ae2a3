package testhost

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// SocketPair returns the two ends of a real AF_UNIX stream socketpair, as
// net.Conns with deadlines and CloseWrite, closed when t ends.
func SocketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// ServeUnix listens on a fresh Unix socket in a short folder of its own (a
// socket path has 108 bytes) and runs handle on every connection, each in
// a goroutine of its own that closes it afterwards, until t ends. It
// returns the socket's path.
func ServeUnix(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgrt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, handle)
	return path
}

// Serve runs handle on every connection ln accepts, each in a goroutine of
// its own that closes it afterwards, until t ends (which closes ln).
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
