package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/vmm"
)

// DefaultVsockTimeout bounds DialVsock's connect and handshake when ctx has
// no deadline. Firecracker gives up on a guest that does not answer a
// connection request after about 2 s and then closes the connection.
const DefaultVsockTimeout = 5 * time.Second

// ErrVsockRefused is wrapped by DialVsock's error when Firecracker closed
// the connection without "OK": nothing in the guest accepted a connection
// on that port (no listener, or the guest's vsock driver is not up yet).
var ErrVsockRefused = errors.New("firecracker closed the connection without OK")

// maxHandshake is the longest "OK <hostport>\n" answer accepted; host
// ports are at most 10 digits.
const maxHandshake = 32

// DialVsock opens a host-initiated connection to guest vsock port through
// Firecracker's hybrid vsock socket udsPath (the uds_path of PUT /vsock):
// it connects, writes "CONNECT <port>\n" and reads Firecracker's
// "OK <hostport>\n" one byte at a time, so that nothing the guest sends
// right after the answer is consumed. The returned connection carries the
// guest's byte stream and has no deadline set.
//
// The error wraps ErrVsockRefused when Firecracker closes the connection
// without OK, context.DeadlineExceeded when no answer came before ctx's
// deadline (DefaultVsockTimeout when ctx has none), and ctx.Err() when ctx
// is cancelled.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	c, err := dialVsock(ctx, udsPath, port)
	if err != nil {
		return nil, fmt.Errorf("dial guest vsock port %d through %s: %w", port, udsPath, err)
	}
	return c, nil
}

func dialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	if err := paths.CheckSocketPath(udsPath); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultVsockTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	if err := handshake(ctx, c, port); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// handshake speaks the CONNECT/OK exchange on c within ctx.
func handshake(ctx context.Context, c net.Conn, port uint32) error {
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	// A cancelled ctx interrupts blocked I/O by moving the deadline.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ctxErr := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer to CONNECT %d: %w", port, context.Cause(ctx))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("no answer to CONNECT %d: %w", port, context.DeadlineExceeded)
		}
		return err
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return ctxErr(fmt.Errorf("send CONNECT: %w", err))
	}
	line := make([]byte, 0, maxHandshake)
	b := make([]byte, 1)
	for {
		n, err := c.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			if len(line) == maxHandshake {
				return fmt.Errorf("answer to CONNECT longer than %d bytes: %q", maxHandshake, line)
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return fmt.Errorf("%w: nothing in the guest listens on port %d (or its vsock driver is not up yet)", ErrVsockRefused, port)
			}
			return fmt.Errorf("%w: connection closed after %q", ErrVsockRefused, line)
		}
		if err != nil {
			return ctxErr(fmt.Errorf("read answer to CONNECT: %w", err))
		}
	}
	s := string(line)
	rest, ok := strings.CutPrefix(s, "OK ")
	if !ok {
		return fmt.Errorf("unexpected answer to CONNECT: %q", s)
	}
	if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return fmt.Errorf("unexpected answer to CONNECT: %q: bad host port", s)
	}
	if !stop() {
		// ctx ended just now and its deadline may already be in place.
		return fmt.Errorf("no answer to CONNECT %d: %w", port, context.Cause(ctx))
	}
	c.SetDeadline(time.Time{})
	return nil
}

// AgentChannel returns "vsock": the guest agent is reached through the
// VM's hybrid vsock socket.
func (d *Driver) AgentChannel() string { return "vsock" }

// DialAgent connects to the guest agent's vsock port (agent.Port) through
// the hybrid vsock socket of st (see DialVsock). The error wraps
// vmm.ErrUnsupported when the VM has no vsock device.
func (d *Driver) DialAgent(ctx context.Context, st vmm.State) (net.Conn, error) {
	if st.AgentSocket == "" {
		return nil, fmt.Errorf("reach the guest agent: the VM has no vsock device: %w", vmm.ErrUnsupported)
	}
	return DialVsock(ctx, st.AgentSocket, agent.Port)
}

// UsesVsock returns true: every Firecracker VM gets a vsock device, the
// guest agent's channel, and so a context id of its own.
func (d *Driver) UsesVsock() bool { return true }

// PreflightPurpose returns "firecracker", the doctor purpose that adds the
// firecracker binary and a KVM that runs guests to what every VM start
// needs.
// The simulator needs what any VM start needs: "vm-start".
func (d *Driver) PreflightPurpose() string {
	if d.sim {
		return "vm-start"
	}
	return "firecracker"
}
