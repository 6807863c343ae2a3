package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
)

// DefaultPingTimeout bounds a ping when the caller gives none.
const DefaultPingTimeout = 2 * time.Second

// Ping asks the VM's guest agent whether it is alive, over a channel that
// does not depend on the guest network: a virtio-serial port under QEMU, the
// hybrid vsock socket under Firecracker. A VM that is not running answers at
// once; a hung guest answers Alive false within timeout. An answered ping
// also measures the guest clock's offset from the host's.
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
	pr, err := s.pingAgent(ctx, st, timeout)
	res.Channel = pr.channel
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.Alive = true
	res.RTTMillis = millis(pr.rtt)
	in := pr.info
	res.Hostname, res.UptimeSeconds, res.BootID, res.AgentVersion = in.Hostname, in.UptimeSeconds, in.BootID, in.AgentVersion
	if pr.legacy != "" {
		res.Note = pr.legacy
	} else {
		off := millis(pr.offset)
		res.ClockOffsetMillis = &off
		s.recordClock(row.ID, pr.offset, pr.rtt)
	}
	return res, nil
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pingResult is what pingAgent learnt.
type pingResult struct {
	info        agent.Info
	rtt, offset time.Duration
	channel     string
	// legacy is set (to why exec and the rest do not work) when the guest
	// runs an agent from before the session layer: it answered the ping
	// only.
	legacy string
}

// pingAgent pings the agent of the VM in st over its session.
func (s *Service) pingAgent(ctx context.Context, st vmm.State, timeout time.Duration) (pingResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pr pingResult
	if drv := s.drivers[st.Driver]; drv != nil {
		pr.channel = vmm.AgentChannel(drv)
	}
	err := s.withSession(ctx, st, func(sess *agent.Session) (err error) {
		pr.info, pr.rtt, pr.offset, err = sess.Ping(ctx)
		return err
	})
	if le, ok := errors.AsType[*agent.LegacyAgentError](err); ok {
		r := le.Reply
		pr.info = agent.Info{Hostname: r.Hostname, UptimeSeconds: r.UptimeSeconds, BootID: r.BootID, AgentVersion: r.AgentVersion}
		pr.legacy = le.Error()
		return pr, nil
	}
	if err != nil {
		return pr, fmt.Errorf("guest agent did not answer within %s: %w", timeout, err)
	}
	return pr, nil
}

// withSession runs fn with the live session to the agent of the VM in st.
// When fn fails because that session ended meanwhile (the agent restarted
// under it: its answer ends the session at once), fn runs once more on a
// new session.
func (s *Service) withSession(ctx context.Context, st vmm.State, fn func(*agent.Session) error) error {
	for attempt := 0; ; attempt++ {
		sess, err := s.agentSession(ctx, st)
		if err != nil {
			return err
		}
		err = fn(sess)
		if err == nil || attempt > 0 || ctx.Err() != nil {
			return err
		}
		select {
		case <-sess.Done():
		case <-time.After(50 * time.Millisecond):
			// Still alive a moment later: the failure was the op's.
			return err
		}
	}
}

// agentLink is the session to one VM's agent, and the lock that makes one
// connect at a time.
type agentLink struct {
	mu   sync.Mutex // held while connecting
	sess *agent.Session
}

// link returns the agentLink of the agent channel at path.
func (s *Service) link(path string) *agentLink {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.links == nil {
		s.links = map[string]*agentLink{}
	}
	l := s.links[path]
	if l == nil {
		l = &agentLink{}
		s.links[path] = l
	}
	return l
}

// AgentSession returns the session to the guest agent of the running VM
// ref (name or id): the one the daemon keeps, or a new one when there is
// none or the last one ended (agent restarted, daemon restarted, guest
// rebooted). Callers open streams on it (agent.Session.Open) and must not
// close it. ctx bounds connecting. A VM that is not running is
// ErrPrecondition; an agent that predates the session layer gives an error
// wrapping agent.ErrLegacyAgent that says to rebuild the image.
func (s *Service) AgentSession(ctx context.Context, ref string) (*agent.Session, error) {
	row, st, err := s.runningState(ctx, ref)
	if err != nil {
		return nil, err
	}
	sess, err := s.agentSession(ctx, st)
	if errors.Is(err, agent.ErrLegacyAgent) {
		return nil, api.Errorf(api.ErrPrecondition, "VM %q: %v", row.Name, err)
	}
	if err != nil {
		return nil, api.Errorf(api.ErrUnavailable, "VM %q: %v", row.Name, err)
	}
	return sess, nil
}

// runningState returns the row and driver state of the running VM ref, or
// ErrPrecondition when it is not running.
func (s *Service) runningState(ctx context.Context, ref string) (store.VM, vmm.State, error) {
	row, err := s.get(ctx, ref)
	if err != nil {
		return row, vmm.State{}, err
	}
	v := s.view(row)
	if v.State == api.StatePaused {
		return row, vmm.State{}, errPaused(row.Name)
	}
	if v.State != api.StateRunning {
		return row, vmm.State{}, api.Errorf(api.ErrPrecondition, "VM %q is %s: start it with `banger vm start %s`", row.Name, v.State, row.Name)
	}
	st, _, _ := driverState(row)
	return row, st, nil
}

// agentSession returns the live session to the agent of the VM in st,
// connecting when needed.
func (s *Service) agentSession(ctx context.Context, st vmm.State) (*agent.Session, error) {
	drv := s.drivers[st.Driver]
	if drv == nil {
		return nil, fmt.Errorf("the VM runs under %q, which this daemon does not know", st.Driver)
	}
	if st.AgentSocket == "" || vmm.AgentChannel(drv) == "" {
		return nil, errors.New("the VM has no agent channel")
	}
	l := s.link(st.AgentSocket)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != nil && l.sess.Alive() {
		return l.sess, nil
	}
	l.sess = nil
	t0 := time.Now()
	conn, err := vmm.DialAgent(ctx, drv, st)
	if err != nil {
		return nil, fmt.Errorf("guest agent unreachable: %w", err)
	}
	sess, err := agent.Connect(ctx, conn, s.log.With("agent", st.AgentSocket))
	if err != nil {
		return nil, fmt.Errorf("guest agent unreachable: %w", err)
	}
	l.sess = sess
	s.log.Debug("agent session started", "agent", st.AgentSocket, "agent_version", sess.AgentVersion, "took", time.Since(t0).Round(time.Millisecond))
	return sess, nil
}

// dropAgentSession ends the session to the agent of a VM that stops.
func (s *Service) dropAgentSession(path string) {
	s.mu.Lock()
	l := s.links[path]
	delete(s.links, path)
	s.mu.Unlock()
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != nil {
		l.sess.Close()
		l.sess = nil
	}
}

// OpenAgentStream opens a stream for op on the session to the agent of the
// running VM ref (see AgentSession) and decodes the guest's result into
// result. A stream the guest refuses becomes an api error of the matching
// kind: not_found is ErrNotFound, invalid ErrInvalid, an op the agent lacks
// ErrPrecondition (its message says to rebuild the image).
func (s *Service) OpenAgentStream(ctx context.Context, ref, op string, params, result any) (net.Conn, error) {
	row, st, err := s.runningState(ctx, ref)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = s.withSession(ctx, st, func(sess *agent.Session) (err error) {
		c, err = sess.Open(ctx, op, params, result)
		return err
	})
	if errors.Is(err, agent.ErrLegacyAgent) {
		return nil, api.Errorf(api.ErrPrecondition, "VM %q: %v", row.Name, err)
	}
	if re, ok := errors.AsType[*agent.RemoteError](err); ok {
		kind := api.ErrUnavailable
		switch re.Code {
		case agent.CodeNotFound:
			kind = api.ErrNotFound
		case agent.CodeInvalid:
			kind = api.ErrInvalid
		case agent.CodeUnknownOp:
			kind = api.ErrPrecondition
		}
		return nil, api.Errorf(kind, "VM %q: %s", row.Name, re.Message)
	}
	if err != nil {
		return nil, api.Errorf(api.ErrUnavailable, "VM %q: %v", row.Name, err)
	}
	return c, nil
}
