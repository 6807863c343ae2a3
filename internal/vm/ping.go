package vm

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/vmm"
)

// DefaultPingTimeout bounds a ping when the caller gives none.
const DefaultPingTimeout = 2 * time.Second

// Ping asks the VM's guest agent whether it is alive, over a channel that
// does not depend on the guest network: a virtio-serial port under QEMU, the
// hybrid vsock socket under Firecracker. A VM that is not running answers at
// once; a hung guest answers Alive false within timeout.
func (s *Service) Ping(ctx context.Context, p api.VMPingParams) (api.PingResult, error) {
	row, err := s.get(ctx, p.Name)
	if err != nil {
		return api.PingResult{}, err
	}
	v := s.view(row)
	res := api.PingResult{Name: row.Name, State: v.State, StartedAt: v.StartedAt}
	if v.State != api.StateRunning {
		res.Error = "vm is " + v.State
		return res, nil
	}
	st, _ := driverState(row)
	timeout := time.Duration(p.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultPingTimeout
	}
	reply, rtt, channel, err := s.pingAgent(ctx, st, timeout)
	res.Channel = channel
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.Alive = true
	res.RTTMillis = float64(rtt.Microseconds()) / 1000
	res.Hostname, res.UptimeSeconds, res.BootID, res.AgentVersion = reply.Hostname, reply.UptimeSeconds, reply.BootID, reply.AgentVersion
	return res, nil
}

// pingAgent dials the agent channel recorded in st and pings once. Pings to
// one VM are serialised: QEMU's chardev serves one client at a time.
func (s *Service) pingAgent(ctx context.Context, st vmm.State, timeout time.Duration) (agent.Reply, time.Duration, string, error) {
	mu := s.pingLock(st.AgentSocket)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if st.AgentSocket == "" {
		return agent.Reply{}, 0, "", fmt.Errorf("the VM has no agent channel")
	}
	var conn net.Conn
	var err error
	channel := "virtio-serial"
	if st.Driver == "firecracker" {
		channel = "vsock"
		conn, err = agent.DialHybridVsock(ctx, st.AgentSocket, agent.Port)
	} else {
		conn, err = agent.DialVirtioSerial(ctx, st.AgentSocket)
	}
	if err != nil {
		return agent.Reply{}, 0, channel, fmt.Errorf("guest agent unreachable: %w", err)
	}
	defer conn.Close()
	reply, rtt, err := agent.Ping(ctx, conn)
	if err != nil {
		return agent.Reply{}, 0, channel, fmt.Errorf("guest agent did not answer within %s: %w", timeout, err)
	}
	return reply, rtt, channel, nil
}
