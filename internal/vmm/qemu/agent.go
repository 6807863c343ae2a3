package qemu

import (
	"context"
	"fmt"
	"net"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/vmm"
)

// AgentChannel returns "virtio-serial": the guest agent is reached through
// a virtio-serial port whose host side is the VM's agent socket.
func (d *Driver) AgentChannel() string { return "virtio-serial" }

// DialAgent connects to the host side of the guest agent's virtio-serial
// port (agent.SerialPortName), the agent socket of st. The connection
// carries the port's byte stream as is, including whatever an earlier
// client left unread (agent.Ping copes). QEMU serves one client at a time:
// a second connection is accepted by the kernel but sees no data until the
// first closes, so callers keep at most one per VM. ctx bounds the connect.
// The error wraps vmm.ErrUnsupported when the VM has no agent channel.
func (d *Driver) DialAgent(ctx context.Context, st vmm.State) (net.Conn, error) {
	if st.AgentSocket == "" {
		return nil, fmt.Errorf("reach the guest agent: the VM has no agent channel: %w", vmm.ErrUnsupported)
	}
	if err := paths.CheckSocketPath(st.AgentSocket); err != nil {
		return nil, fmt.Errorf("dial the guest agent: %w", err)
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", st.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("dial the guest agent: %w", err)
	}
	return c, nil
}
