package portfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// Dialer opens an agent stream for Op with params to the guest of one VM
// (vm.Service.OpenAgentStream). The returned connection carries the
// forward's bytes; Close is a half-close.
type Dialer func(ctx context.Context, p Params) (net.Conn, error)

// Manager holds the host side of every active forward: one listener per
// forward of a running VM. It is safe for concurrent use.
type Manager struct {
	log *slog.Logger

	mu   sync.Mutex
	fwds map[string]map[Spec]*forward // by VM id
}

// NewManager returns a Manager with no forward.
func NewManager(log *slog.Logger) *Manager {
	return &Manager{log: log.With("component", "forward"), fwds: map[string]map[Spec]*forward{}}
}

// forward is one listening forward.
type forward struct {
	spec   Spec
	ln     net.Listener   // tcp
	pc     net.PacketConn // udp
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// TakenError is the error of a host address and port that something else
// holds, with the fix in its text.
type TakenError struct {
	Spec Spec
	Err  error
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("host port %s/%s is taken (%v): choose another host port, or stop what listens there (`ss -lntup 'sport = :%d'` shows it)",
		e.Spec.HostAddrPort(), e.Spec.Proto, e.Err, e.Spec.HostPort)
}

func (e *TakenError) Unwrap() error { return e.Err }

// listen binds s's host side: a TCP listener or a UDP socket.
func listen(s Spec) (net.Listener, net.PacketConn, error) {
	addr := s.HostAddrPort().String()
	var ln net.Listener
	var pc net.PacketConn
	var err error
	if s.Proto == "udp" {
		pc, err = net.ListenPacket("udp", addr)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, nil, &TakenError{Spec: s, Err: syscall.EADDRINUSE}
	case errors.Is(err, syscall.EACCES) && s.HostPort < 1024:
		return nil, nil, fmt.Errorf("host port %d/%s: binding a port below 1024 needs root or CAP_NET_BIND_SERVICE for bangerd: use a port of 1024 or above", s.HostPort, s.Proto)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, nil, fmt.Errorf("host address %s is not an address of this host: use 127.0.0.1 (the default), 0.0.0.0 or one of `ip -brief addr`", s.HostAddr)
	case err != nil:
		return nil, nil, fmt.Errorf("listen on %s/%s: %w", addr, s.Proto, err)
	}
	return ln, pc, nil
}

// CheckFree reports whether s's host side can be bound now (it binds and
// closes at once): a *TakenError when something holds it.
func CheckFree(s Spec) error {
	ln, pc, err := listen(s)
	if err != nil {
		return err
	}
	if ln != nil {
		ln.Close()
	}
	if pc != nil {
		pc.Close()
	}
	return nil
}

// Open starts forwarding s for VM vm through dial. It returns once the
// host side listens, or with an error (a *TakenError when the port is
// taken) having started nothing. Opening a forward that is open already
// does nothing.
func (m *Manager) Open(vm string, s Spec, dial Dialer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.fwds[vm][s]; ok {
		return nil
	}
	ln, pc, err := listen(s)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forward{spec: s, ln: ln, pc: pc, cancel: cancel}
	log := m.log.With("vm", vm, "forward", s.String())
	if ln != nil {
		f.wg.Go(func() { f.serveTCP(ctx, dial, log) })
	} else {
		f.wg.Go(func() { f.serveUDP(ctx, dial, log) })
	}
	if m.fwds[vm] == nil {
		m.fwds[vm] = map[Spec]*forward{}
	}
	m.fwds[vm][s] = f
	log.Info("forwarding")
	return nil
}

// Close stops forwarding s for vm and waits until its connections ended;
// nothing when it is not open.
func (m *Manager) Close(vm string, s Spec) {
	m.mu.Lock()
	f := m.fwds[vm][s]
	delete(m.fwds[vm], s)
	if len(m.fwds[vm]) == 0 {
		delete(m.fwds, vm)
	}
	m.mu.Unlock()
	if f != nil {
		f.close()
	}
}

// CloseVM stops every forward of vm (it stopped, or is gone).
func (m *Manager) CloseVM(vm string) {
	m.mu.Lock()
	fs := m.fwds[vm]
	delete(m.fwds, vm)
	m.mu.Unlock()
	for _, f := range fs {
		f.close()
	}
}

// CloseAll stops every forward (the daemon stops).
func (m *Manager) CloseAll() {
	m.mu.Lock()
	all := m.fwds
	m.fwds = map[string]map[Spec]*forward{}
	m.mu.Unlock()
	for _, fs := range all {
		for _, f := range fs {
			f.close()
		}
	}
}

// IsOpen reports whether s of vm is forwarding now.
func (m *Manager) IsOpen(vm string, s Spec) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.fwds[vm][s]
	return ok
}

func (f *forward) close() {
	f.cancel()
	if f.ln != nil {
		f.ln.Close()
	}
	if f.pc != nil {
		f.pc.Close()
	}
	f.wg.Wait()
}

// dialTimeout bounds opening the agent stream of one connection.
const dialTimeout = 30 * time.Second

// serveTCP accepts connections until ctx ends, each spliced to a stream.
func (f *forward) serveTCP(ctx context.Context, dial Dialer, log *slog.Logger) {
	var conns sync.WaitGroup
	defer conns.Wait()
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		conns.Go(func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			g, err := dial(dctx, Params{Proto: "tcp", Port: f.spec.GuestPort})
			cancel()
			if err != nil {
				log.Debug("connection refused by the guest", "client", c.RemoteAddr().String(), "err", err)
				return
			}
			defer g.Close()
			stopG := context.AfterFunc(ctx, func() { g.Close() })
			defer stopG()
			if err := Splice(c, g); err != nil {
				log.Debug("connection ended", "client", c.RemoteAddr().String(), "err", err)
			}
		})
	}
}

// udpFlow is one UDP client's stream to the guest.
type udpFlow struct {
	stream net.Conn
	last   time.Time
}

// serveUDP relays datagrams until ctx ends: each client address gets a
// stream of its own, ended after udpIdle without a datagram from it.
func (f *forward) serveUDP(ctx context.Context, dial Dialer, log *slog.Logger) {
	var mu sync.Mutex
	flows := map[string]*udpFlow{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		mu.Lock()
		for _, fl := range flows {
			fl.stream.Close()
		}
		mu.Unlock()
	}()
	// Idle flows end.
	wg.Go(func() {
		t := time.NewTicker(udpIdle / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			for k, fl := range flows {
				if time.Since(fl.last) > udpIdle {
					fl.stream.Close()
					delete(flows, k)
				}
			}
			mu.Unlock()
		}
	})
	buf := make([]byte, MaxDatagram)
	for {
		n, client, err := f.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warn("read datagram", "err", err)
			continue
		}
		key := client.String()
		mu.Lock()
		fl := flows[key]
		mu.Unlock()
		if fl == nil {
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			g, err := dial(dctx, Params{Proto: "udp", Port: f.spec.GuestPort})
			cancel()
			if err != nil {
				log.Debug("datagram refused by the guest", "client", key, "err", err)
				continue
			}
			fl = &udpFlow{stream: g}
			mu.Lock()
			flows[key] = fl
			mu.Unlock()
			wg.Go(func() {
				rbuf := make([]byte, MaxDatagram)
				for {
					n, err := ReadFrame(g, rbuf)
					if err != nil {
						break
					}
					f.pc.WriteTo(rbuf[:n], client)
				}
				g.Close()
				mu.Lock()
				if flows[key] == fl {
					delete(flows, key)
				}
				mu.Unlock()
			})
		}
		mu.Lock()
		fl.last = time.Now()
		mu.Unlock()
		if err := WriteFrame(fl.stream, buf[:n]); err != nil {
			fl.stream.Close()
		}
	}
}
