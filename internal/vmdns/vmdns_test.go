package vmdns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// vms is a Lookup over a map the test changes.
type vms struct {
	mu sync.Mutex
	m  map[string]netip.Addr
}

func (v *vms) LookupName(_ context.Context, name string) (netip.Addr, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	a, ok := v.m[name]
	return a, ok, nil
}

func (v *vms) LookupAddr(_ context.Context, addr netip.Addr) (string, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for n, a := range v.m {
		if a == addr {
			return n, true, nil
		}
	}
	return "", false, nil
}

func (v *vms) remove(name string) {
	v.mu.Lock()
	delete(v.m, name)
	v.mu.Unlock()
}

var subnet = netip.MustParsePrefix("172.30.0.0/24")

func start(t *testing.T, lk Lookup, upstreams ...netip.AddrPort) *Server {
	t.Helper()
	s, err := Start(Config{
		Addr: netip.MustParseAddrPort("127.0.0.1:0"), Subnet: subnet, Lookup: lk,
		Upstreams:      func() []netip.AddrPort { return upstreams },
		Host:           netip.MustParseAddr("172.30.0.1"),
		ForwardTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ask(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, s.Addr().String())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAnswers(t *testing.T) {
	lk := &vms{m: map[string]netip.Addr{"dev": netip.MustParseAddr("172.30.0.2"), "web": netip.MustParseAddr("172.30.0.3")}}
	s := start(t, lk)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := ask(t, s, network, "dev.banger.internal.", dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.Authoritative {
				t.Fatalf("A dev: %v", r)
			}
			if a := r.Answer[0].(*dns.A); a.A.String() != "172.30.0.2" || a.Hdr.Ttl != 0 {
				t.Fatalf("A dev: %v", a)
			}
			// Names are case-insensitive; the answer keeps the asked case.
			r = ask(t, s, network, "WEB.Banger.Internal.", dns.TypeA)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.30.0.3" || r.Answer[0].Header().Name != "WEB.Banger.Internal." {
				t.Fatalf("A WEB: %v", r)
			}
			// The name exists, but has no IPv6 address: NODATA.
			r = ask(t, s, network, "dev.banger.internal.", dns.TypeAAAA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Fatalf("AAAA dev: %v", r)
			}
			for _, name := range []string{"nope.banger.internal.", "a.dev.banger.internal."} {
				r = ask(t, s, network, name, dns.TypeA)
				if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 || len(r.Ns) != 1 {
					t.Fatalf("A %s: %v", name, r)
				}
			}
			r = ask(t, s, network, "host.banger.internal.", dns.TypeA)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.30.0.1" {
				t.Fatalf("A host: %v", r)
			}
			r = ask(t, s, network, "1.0.30.172.in-addr.arpa.", dns.TypePTR)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "host.banger.internal." {
				t.Fatalf("PTR of the host: %v", r)
			}
			r = ask(t, s, network, "banger.internal.", dns.TypeSOA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("SOA: %v", r)
			}
			r = ask(t, s, network, "2.0.30.172.in-addr.arpa.", dns.TypePTR)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "dev.banger.internal." {
				t.Fatalf("PTR 172.30.0.2: %v", r)
			}
			r = ask(t, s, network, "9.0.30.172.in-addr.arpa.", dns.TypePTR)
			if r.Rcode != dns.RcodeNameError {
				t.Fatalf("PTR 172.30.0.9 (no VM): %v", r)
			}
			r = ask(t, s, network, "0.30.172.in-addr.arpa.", dns.TypeNS)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
				t.Fatalf("the subnet's reverse zone: %v", r)
			}
		})
	}
	// A removed VM stops resolving at the next question.
	lk.remove("dev")
	if r := ask(t, s, "udp", "dev.banger.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("A dev after removal: %v", r)
	}
	if r := ask(t, s, "udp", "2.0.30.172.in-addr.arpa.", dns.TypePTR); r.Rcode != dns.RcodeNameError {
		t.Fatalf("PTR after removal: %v", r)
	}
}

// upstream is a real DNS server on loopback that answers every A question
// with 192.0.2.7 and records the names it was asked.
func upstream(t *testing.T) (netip.AddrPort, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var asked []string
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		asked = append(asked, w.RemoteAddr().Network()+" "+r.Question[0].Name)
		mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.7")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	up, err := Start(Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Lookup: &vms{}})
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	// Reuse its free port for a plain miekg server pair.
	addr := up.Addr().String()
	var servers []*dns.Server
	for _, n := range []string{"udp", "tcp"} {
		started := make(chan struct{})
		srv := &dns.Server{Addr: addr, Net: n, Handler: h, NotifyStartedFunc: func() { close(started) }}
		go srv.ListenAndServe()
		<-started
		servers = append(servers, srv)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	return up.Addr(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked)
	}
}

func TestForward(t *testing.T) {
	up, asked := upstream(t)
	dead := netip.MustParseAddrPort("127.0.0.1:1") // nothing answers there
	s := start(t, &vms{m: map[string]netip.Addr{}}, dead, up)
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s, network, "example.org.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
			t.Fatalf("%s forwarded: %v", network, r)
		}
	}
	// A reverse name outside the subnet is forwarded too.
	ask(t, s, "udp", "7.2.0.192.in-addr.arpa.", dns.TypePTR)
	want := []string{"udp example.org.", "tcp example.org.", "udp 7.2.0.192.in-addr.arpa."}
	if got := asked(); !slices.Equal(got, want) {
		t.Fatalf("upstream asked %q, want %q (over the client's own transport)", got, want)
	}
	// Names of the zone are never forwarded.
	ask(t, s, "udp", "nope.banger.internal.", dns.TypeA)
	if got := asked(); len(got) != len(want) {
		t.Fatalf("a banger.internal name was forwarded: %q", got)
	}
}

func TestForwardNoUpstream(t *testing.T) {
	s := start(t, &vms{})
	if r := ask(t, s, "udp", "example.org.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstream: %v", r)
	}
	// Its own address as upstream is skipped (no loop).
	s2, err := Start(Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Subnet: subnet, Lookup: &vms{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.cfg.Upstreams = func() []netip.AddrPort { return []netip.AddrPort{s2.Addr()} }
	if r := ask(t, s2, "udp", "example.org.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("self as upstream: %v", r)
	}
}

func TestStartPortTaken(t *testing.T) {
	s := start(t, &vms{})
	_, err := Start(Config{Addr: s.Addr(), Lookup: &vms{}})
	if err == nil {
		t.Fatal("a second server on the same port started")
	}
	t.Log(err)
}

func TestReadResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch lan\noptions ndots:2\n"), 0o644)
	got, err := ReadResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("[2001:db8::1]:53")}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestReverseNames(t *testing.T) {
	for name, want := range map[string]string{
		"4.0.30.172.in-addr.arpa.":   "172.30.0.4",
		"04.0.30.172.in-addr.arpa.":  "",
		"256.0.30.172.in-addr.arpa.": "",
		"0.30.172.in-addr.arpa.":     "",
		"4.0.30.172.ip6.arpa.":       "",
	} {
		a, ok := reverseAddr(name)
		if (want == "") == ok || (ok && a.String() != want) {
			t.Errorf("reverseAddr(%q) = %v %v, want %q", name, a, ok, want)
		}
	}
	if !isReverseOf("0.30.172.in-addr.arpa.", subnet) || !isReverseOf("x.0.30.172.in-addr.arpa.", subnet) || isReverseOf("1.30.172.in-addr.arpa.", subnet) {
		t.Error("isReverseOf")
	}
}

func TestRegisterArgs(t *testing.T) {
	got := RegisterArgs("banger0", netip.MustParseAddr("172.30.0.1"))
	want := [][]string{{"dns", "banger0", "172.30.0.1"}, {"domain", "banger0", "~banger.internal"}}
	if len(got) != 2 || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Fatalf("got %q", got)
	}
}
