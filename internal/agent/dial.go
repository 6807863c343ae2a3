package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// maxSocketPath is the size of sun_path in struct sockaddr_un on Linux.
const maxSocketPath = 108

// maxHandshakeLine bounds Firecracker's answer to CONNECT ("OK 1073741824\n"
// is 14 bytes).
const maxHandshakeLine = 64

// DialVirtioSerial connects to the host side of the agent's virtio-serial
// port: the Unix socket QEMU serves for
//
//	-chardev socket,id=agent,path=PATH,server=on,wait=off
//	-device virtserialport,chardev=agent,name=org.banger.agent
//
// The returned connection carries the port's byte stream as is, including
// whatever an earlier client left unread; use Ping on it, which copes. QEMU
// serves one client at a time: a second connection is accepted by the kernel
// but sees no data until the first closes, so callers should keep at most one
// connection per VM. ctx bounds the connect only.
func DialVirtioSerial(ctx context.Context, socketPath string) (net.Conn, error) {
	if err := checkSocketPath(socketPath); err != nil {
		return nil, fmt.Errorf("dial agent virtio-serial socket: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("dial agent virtio-serial socket: %w", err)
	}
	return c, nil
}

// DialHybridVsock connects to guest vsock port through Firecracker's hybrid
// vsock Unix socket udsPath (the uds_path of PUT /vsock): it connects,
// writes "CONNECT <port>\n" and reads Firecracker's "OK <hostport>\n" one
// byte at a time, so that nothing the guest sends right after is swallowed.
// Firecracker closes the connection without OK when nothing in the guest
// listens on port; the error then says so. ctx bounds the connect and the
// handshake; the returned connection has no deadline set.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	if err := checkSocketPath(udsPath); err != nil {
		return nil, fmt.Errorf("dial guest vsock port %d: %w", port, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("dial guest vsock port %d: %w", port, err)
	}
	if err := hybridHandshake(ctx, c, port); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial guest vsock port %d via %s: %w", port, udsPath, err)
	}
	return c, nil
}

// hybridHandshake speaks Firecracker's CONNECT/OK exchange on c.
func hybridHandshake(ctx context.Context, c net.Conn, port uint32) error {
	release := bindDeadline(ctx, c)
	defer release()

	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return fmt.Errorf("send CONNECT: %w", ctxError(ctx, err))
	}
	var line []byte
	var b [1]byte
	for {
		n, err := c.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) == maxHandshakeLine {
				return fmt.Errorf("answer to CONNECT longer than %d bytes: %q...", maxHandshakeLine, line)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return fmt.Errorf("connection closed after %q without a newline", line)
			}
			return errors.New("connection closed without OK: nothing in the guest listens on that port (is banger-vsock-pingd running?)")
		}
		if err != nil {
			return fmt.Errorf("read answer to CONNECT: %w", ctxError(ctx, err))
		}
	}
	s := strings.TrimSuffix(string(line), "\r")
	rest, ok := strings.CutPrefix(s, "OK ")
	if !ok {
		return fmt.Errorf("unexpected answer to CONNECT: %q", s)
	}
	if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return fmt.Errorf("unexpected answer to CONNECT: %q: bad host port", s)
	}
	return nil
}

// checkSocketPath rejects paths that do not fit in a sockaddr_un, with a
// message that says what to do.
func checkSocketPath(p string) error {
	if p == "" {
		return errors.New("empty socket path")
	}
	if len(p) > maxSocketPath {
		return fmt.Errorf("socket path %q is %d bytes, more than the %d a Unix socket path can have; use a shorter state or runtime directory (XDG_STATE_HOME, XDG_RUNTIME_DIR)", p, len(p), maxSocketPath)
	}
	return nil
}
