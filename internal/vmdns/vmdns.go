// Package vmdns is the DNS server bangerd runs on the bridge address: it
// answers NAME.banger.internal with the address of VM NAME (A), and the
// VM subnet's reverse names with the VM's name (PTR), and forwards every
// other question to the host's own resolvers. Guests use it as their name
// server; the host reaches it through systemd-resolved, which bangerd asks
// to send the banger.internal domain there (see Register).
//
// Names are looked up at every question (see Lookup), with a TTL of 0, so
// a VM that is removed stops resolving at once, also in caches.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Domain is the zone the server is authoritative for, without the final
// dot: VM NAME is NAME.banger.internal.
const Domain = "banger.internal"

// zone is Domain as a fully qualified DNS name.
const zone = Domain + "."

// HostName is the name under Domain that resolves to the host itself (its
// bridge address); no VM may be called so.
const HostName = "host"

// FQDN returns the host name of VM name: "dev" is "dev.banger.internal".
func FQDN(name string) string { return name + "." + Domain }

// Lookup finds VMs for the server. Both methods are called on every
// question, concurrently, and should answer from the current state (the
// database), so that names follow VMs at once.
type Lookup interface {
	// LookupName returns the address of the VM called name (a DNS label,
	// lower case), ok false when there is none.
	LookupName(ctx context.Context, name string) (addr netip.Addr, ok bool, err error)
	// LookupAddr returns the name of the VM with address addr, ok false
	// when there is none.
	LookupAddr(ctx context.Context, addr netip.Addr) (name string, ok bool, err error)
}

// Config is what a Server serves.
type Config struct {
	// Addr is the address to listen on, port 53 on the bridge address.
	Addr netip.AddrPort
	// Subnet is the VM subnet: its reverse names are answered here (the
	// ones no VM holds with NXDOMAIN), never forwarded.
	Subnet netip.Prefix
	// Lookup finds VMs.
	Lookup Lookup
	// Host, when valid, is the address HostName (host.banger.internal)
	// resolves to: the bridge address, where guests reach the host.
	Host netip.Addr
	// Upstreams returns the resolvers to forward other questions to
	// (address and port each), asked at every forwarded question; nil
	// means HostUpstreams. Addresses equal to Addr are skipped.
	Upstreams func() []netip.AddrPort
	// ForwardTimeout bounds one forwarded exchange per upstream; 0 means
	// 2 s.
	ForwardTimeout time.Duration
	Log            *slog.Logger
}

// Server is a running DNS server (UDP and TCP on one address).
type Server struct {
	cfg  Config
	udp  *dns.Server
	tcp  *dns.Server
	wg   sync.WaitGroup
	errs chan error
}

// ttl of every answer: names follow VMs at once.
const ttl = 0

// Start listens on cfg.Addr (UDP and TCP) and serves until Close. When
// either socket cannot be bound (the port is taken, or binding port 53
// needs CAP_NET_BIND_SERVICE) nothing is left listening and the error
// says which.
func Start(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("vmdns: no Lookup")
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 2 * time.Second
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = HostUpstreams
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	addr := cfg.Addr.String()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns server: listen on udp %s: %w", addr, err)
	}
	// Port 0 (tests): TCP takes the port UDP got.
	if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		cfg.Addr = netip.AddrPortFrom(cfg.Addr.Addr(), uint16(ua.Port))
		addr = cfg.Addr.String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns server: listen on tcp %s: %w", addr, err)
	}
	s := &Server{cfg: cfg, errs: make(chan error, 2)}
	h := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.errs <- err
			}
		}()
		select {
		case <-started:
		case err := <-s.errs:
			s.Close()
			return nil, fmt.Errorf("dns server on %s: %w", addr, err)
		}
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.cfg.Addr }

// Close stops serving and waits until both sockets are closed.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
	s.wg.Wait()
	return err
}

// serveDNS answers one message.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ForwardTimeout*3)
	defer cancel()
	resp := s.answer(ctx, req, w.RemoteAddr().Network())
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		s.cfg.Log.Debug("dns: write answer", "err", err)
	}
}

// answer is the response to req (asked over network "udp" or "tcp"), nil
// when none should be sent.
func (s *Server) answer(ctx context.Context, req *dns.Msg, network string) *dns.Msg {
	if req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		if len(req.Question) != 1 || req.Response {
			m.Rcode = dns.RcodeFormatError
		}
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		return s.forward(ctx, req, network)
	case name == zone || strings.HasSuffix(name, "."+zone):
		return s.answerZone(ctx, req, q, name)
	}
	if addr, ok := reverseAddr(name); ok {
		if s.cfg.Subnet.Contains(addr) {
			return s.answerReverse(ctx, req, q, addr)
		}
		return s.forward(ctx, req, network)
	}
	if isReverseOf(name, s.cfg.Subnet) {
		// A reverse name in the subnet's zone that is not one address
		// (the zone itself, say): ours, and empty.
		return s.negative(req, dns.RcodeSuccess)
	}
	return s.forward(ctx, req, network)
}

// answerZone answers a question under banger.internal.
func (s *Server) answerZone(ctx context.Context, req *dns.Msg, q dns.Question, name string) *dns.Msg {
	if name == zone {
		m := s.reply(req)
		switch q.Qtype {
		case dns.TypeSOA, dns.TypeANY:
			m.Answer = append(m.Answer, s.soa())
		default:
			m.Ns = append(m.Ns, s.soa())
		}
		return m
	}
	label := strings.TrimSuffix(name, "."+zone)
	if strings.Contains(label, ".") {
		return s.negative(req, dns.RcodeNameError)
	}
	addr, ok, err := s.cfg.Lookup.LookupName(ctx, label)
	if label == HostName && s.cfg.Host.IsValid() {
		addr, ok, err = s.cfg.Host, true, nil
	}
	if err != nil {
		s.cfg.Log.Warn("dns: look up a VM", "name", label, "err", err)
		return s.negative(req, dns.RcodeServerFailure)
	}
	if !ok || !addr.Is4() {
		return s.negative(req, dns.RcodeNameError)
	}
	m := s.reply(req)
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   net.IP(addr.AsSlice()),
		})
	} else {
		// The name exists, with no record of this type (AAAA: guests have
		// no IPv6).
		m.Ns = append(m.Ns, s.soa())
	}
	return m
}

// answerReverse answers the PTR name of addr, an address of the subnet.
func (s *Server) answerReverse(ctx context.Context, req *dns.Msg, q dns.Question, addr netip.Addr) *dns.Msg {
	name, ok, err := s.cfg.Lookup.LookupAddr(ctx, addr)
	if addr == s.cfg.Host {
		name, ok, err = HostName, true, nil
	}
	if err != nil {
		s.cfg.Log.Warn("dns: look up a VM address", "addr", addr, "err", err)
		return s.negative(req, dns.RcodeServerFailure)
	}
	if !ok {
		return s.negative(req, dns.RcodeNameError)
	}
	m := s.reply(req)
	if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.PTR{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
			Ptr: dns.Fqdn(FQDN(name)),
		})
	} else {
		m.Ns = append(m.Ns, s.soa())
	}
	return m
}

// reply is an authoritative, empty answer to req.
func (s *Server) reply(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	return m
}

// negative is an authoritative answer with rcode and the zone's SOA (for
// negative caching, which its minimum TTL of 0 turns off).
func (s *Server) negative(req *dns.Msg, rcode int) *dns.Msg {
	m := s.reply(req)
	m.Rcode = rcode
	if rcode != dns.RcodeServerFailure {
		m.Ns = append(m.Ns, s.soa())
	}
	return m
}

func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: ttl,
	}
}

// forward asks the upstreams, in order, until one answers; SERVFAIL when
// none does (or there are none).
func (s *Server) forward(ctx context.Context, req *dns.Msg, network string) *dns.Msg {
	c := &dns.Client{Net: network, Timeout: s.cfg.ForwardTimeout}
	var lastErr error
	for _, up := range s.cfg.Upstreams() {
		if up == s.cfg.Addr || (up.Addr() == s.cfg.Addr.Addr() && up.Port() == s.cfg.Addr.Port()) {
			continue
		}
		resp, _, err := c.ExchangeContext(ctx, req, up.String())
		if err == nil && resp.Truncated && network == "udp" {
			// Our client may take a longer answer than its client: pass
			// on the truncated one, its client retries over TCP.
			return resp
		}
		if err == nil {
			return resp
		}
		lastErr = err
	}
	if lastErr != nil {
		s.cfg.Log.Debug("dns: forward", "name", req.Question[0].Name, "err", lastErr)
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

// reverseAddr parses an IPv4 reverse name ("4.0.30.172.in-addr.arpa.").
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, p := range parts {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 0 || n > 255 || fmt.Sprint(n) != p {
			return netip.Addr{}, false
		}
		b[3-i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}

// isReverseOf reports whether name is a reverse name at or under the
// reverse zone of subnet's whole octets (30.172.in-addr.arpa. for a /16,
// 0.30.172.in-addr.arpa. for a /24 or longer).
func isReverseOf(name string, subnet netip.Prefix) bool {
	if !subnet.IsValid() {
		return false
	}
	octets := subnet.Bits() / 8
	b := subnet.Masked().Addr().As4()
	var parts []string
	for i := octets - 1; i >= 0; i-- {
		parts = append(parts, fmt.Sprint(b[i]))
	}
	z := strings.Join(parts, ".") + ".in-addr.arpa."
	return name == z || strings.HasSuffix(name, "."+z)
}
