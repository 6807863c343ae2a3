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
	st, _, _ := driverState(row) // running, so it decoded
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

// pingAgent pings the agent of the VM in st through its driver's agent
// channel (vmm.AgentDialer). Pings to one VM are serialised: QEMU's
// chardev serves one client at a time.
//
// The connection is kept open between pings: over virtio-serial, while no
// host client is connected the guest's port reads end at once, so the agent
// can only poll for a host (it backs off 200 ms); with the host side held
// open it blocks in read and answers in about a millisecond. A vsock stream
// is kept the same way, which saves its handshake.
func (s *Service) pingAgent(ctx context.Context, st vmm.State, timeout time.Duration) (agent.Reply, time.Duration, string, error) {
	mu := s.pingLock(st.AgentSocket)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	drv := s.drivers[st.Driver]
	if drv == nil {
		return agent.Reply{}, 0, "", fmt.Errorf("the VM runs under %q, which this daemon does not know", st.Driver)
	}
	channel := vmm.AgentChannel(drv)
	if st.AgentSocket == "" || channel == "" {
		return agent.Reply{}, 0, channel, fmt.Errorf("the VM has no agent channel")
	}
	conn := s.agentConn(st.AgentSocket)
	if conn == nil {
		c, err := vmm.DialAgent(ctx, drv, st)
		if err != nil {
			return agent.Reply{}, 0, channel, fmt.Errorf("guest agent unreachable: %w", err)
		}
		conn = c
	}
	reply, rtt, err := agent.Ping(ctx, conn)
	if err != nil {
		// A broken or silent channel is not reused: the next ping dials anew.
		conn.Close()
		s.setAgentConn(st.AgentSocket, nil)
		return agent.Reply{}, 0, channel, fmt.Errorf("guest agent did not answer within %s: %w", timeout, err)
	}
	s.setAgentConn(st.AgentSocket, conn)
	return reply, rtt, channel, nil
}

func (s *Service) agentConn(path string) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agentConns[path]
}

func (s *Service) setAgentConn(path string, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agentConns == nil {
		s.agentConns = map[string]net.Conn{}
	}
	if c == nil {
		delete(s.agentConns, path)
		return
	}
	s.agentConns[path] = c
}

// dropAgentConn closes the kept agent connection of a VM that stops.
func (s *Service) dropAgentConn(path string) {
	s.mu.Lock()
	c := s.agentConns[path]
	delete(s.agentConns, path)
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
