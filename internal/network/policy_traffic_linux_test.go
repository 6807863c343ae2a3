package network

// Behaviour of the guest network policy with real traffic between network
// namespaces the test creates. Veth pairs stand in for TAP devices (a TAP
// needs a VMM to carry traffic); the policy treats any device the same.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lab is this topology, all in namespaces made by the test:
//
//	guest1 10.213.0.2 ─veth─┐
//	                        bridge 10.213.0.1 ─ host ─ 198.51.100.1 ─veth─ upstream 198.51.100.2
//	guest2 10.213.0.3 ─veth─┘   (host: 169.254.169.254 on lo;                also 10.9.0.2, 100.64.0.2
//	                             routes to upstream's other addresses)     and 169.254.170.2
//
// The upstream has no route back to the guests, so replies reach a guest
// only through the masquerade. Every server records the markers it
// receives, so a check sees from both ends whether traffic got through.
type lab struct {
	t                   *testing.T // the running (sub)test
	top                 *testing.T // the test that made the lab, for cleanups
	h                   *Host
	host, g1, g2, up    netns.NsHandle
	policy              Policy
	ports               []Port // guest1's and guest2's host-side veths
	g1MAC, g2MAC, brMAC net.HardwareAddr

	handles map[netns.NsHandle]*netlink.Handle

	mu   sync.Mutex
	seen map[string]string // marker -> address the server saw it from
	n    int
}

// nl returns a netlink handle on ns, closed when the test ends.
func (l *lab) nl(ns netns.NsHandle) *netlink.Handle {
	l.t.Helper()
	if hn := l.handles[ns]; hn != nil {
		return hn
	}
	hn, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		l.t.Fatalf("netlink handle in test namespace: %v", err)
	}
	l.top.Cleanup(hn.Close)
	l.handles[ns] = hn
	return hn
}

var (
	labSubnet = netip.MustParsePrefix("10.213.0.0/24")
	labGW     = netip.MustParseAddr("10.213.0.1")
	labG1     = netip.MustParseAddr("10.213.0.2")
	labG2     = netip.MustParseAddr("10.213.0.3")
	labSpoof  = netip.MustParseAddr("10.213.0.99")
	labHostUp = netip.MustParseAddr("198.51.100.1")
	labUp     = netip.MustParseAddr("198.51.100.2")
	labUpLAN  = netip.MustParseAddr("10.9.0.2")             // RFC 1918
	labUpCGN  = netip.MustParseAddr("100.64.0.2")           // RFC 6598
	labUpMeta = netip.MustParseAddr("169.254.170.2")        // link-local, forwarded
	labMeta   = netip.MustParseAddr("169.254.169.254")      // link-local, on the host
	otherMAC  = net.HardwareAddr{0x52, 0x54, 0, 0, 1, 0x99} // nobody's
)

func newLab(t *testing.T) *lab {
	h, nl, host := testHost(t)
	l := &lab{t: t, top: t, h: h, host: host, g1: testhost.NewNetns(t), g2: testhost.NewNetns(t), up: testhost.NewNetns(t), seen: map[string]string{},
		handles: map[netns.NsHandle]*netlink.Handle{},
		g1MAC:   net.HardwareAddr{0x52, 0x54, 0, 0, 1, 2}, g2MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 1, 3}}
	l.policy = Policy{Bridge: testBridge, Subnet: labSubnet}
	if err := h.EnsureBridge(testBridge, GatewayPrefix(labSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	br := mustLink(t, nl, testBridge)

	// wire makes a veth pair, moves the peer into ns with mac and addrs,
	// and returns the host side, up.
	wire := func(name, peer string, ns netns.NsHandle, mac net.HardwareAddr, addrs ...string) netlink.Link {
		addVeth(t, nl, name, peer)
		if err := nl.LinkSetNsFd(mustLink(t, nl, peer), int(ns)); err != nil {
			t.Fatalf("move %s: %v", peer, err)
		}
		hn := l.nl(ns)
		pl := mustLink(t, hn, peer)
		if mac != nil {
			if err := hn.LinkSetHardwareAddr(pl, mac); err != nil {
				t.Fatal(err)
			}
		}
		for _, a := range addrs {
			if err := hn.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a))}); err != nil {
				t.Fatalf("add %s to %s: %v", a, peer, err)
			}
		}
		for _, l := range []netlink.Link{pl, mustLink(t, hn, "lo")} {
			if err := hn.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		hostSide := mustLink(t, nl, name)
		if err := nl.LinkSetUp(hostSide); err != nil {
			t.Fatal(err)
		}
		return hostSide
	}
	for _, g := range []struct {
		name string
		ns   netns.NsHandle
		mac  net.HardwareAddr
		ip   netip.Addr
	}{{"g1", l.g1, l.g1MAC, labG1}, {"g2", l.g2, l.g2MAC, labG2}} {
		port := wire(testLinkPrefix+"-"+g.name+"h", testLinkPrefix+"-"+g.name, g.ns, g.mac, netip.PrefixFrom(g.ip, 24).String())
		if err := nl.LinkSetMaster(port, br); err != nil {
			t.Fatalf("enslave %s: %v", port.Attrs().Name, err)
		}
		l.ports = append(l.ports, Port{Name: port.Attrs().Name, MAC: g.mac, IP: g.ip})
		l.addRoute(g.ns, "0.0.0.0/0", labGW)
	}
	upPort := wire(testLinkPrefix+"-uph", testLinkPrefix+"-up", l.up, nil,
		"198.51.100.2/24", "10.9.0.2/32", "100.64.0.2/32", "169.254.170.2/32")
	if err := nl.AddrAdd(upPort, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.1/24"))}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{labUpLAN, labUpCGN, labUpMeta} {
		l.addRoute(host, netip.PrefixFrom(dst, 32).String(), labUp)
	}
	// A metadata address on the host (on lo: some kernels lack dummy
	// devices).
	lo := mustLink(t, nl, "lo")
	if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(labMeta, 32))}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	l.brMAC = mustLink(t, nl, testBridge).Attrs().HardwareAddr // known once its ports are in

	// The guests know their neighbours' MACs, so that traffic from a
	// spoofed source needs no ARP and meets the IPv4 rule itself; they take
	// no ICMP redirects, so a route through the gateway stays routed.
	l.neigh(l.g1, testLinkPrefix+"-g1", labGW, l.brMAC)
	l.neigh(l.g1, testLinkPrefix+"-g1", labG2, l.g2MAC)
	l.neigh(l.g2, testLinkPrefix+"-g2", labGW, l.brMAC)
	for _, g := range []struct {
		ns  netns.NsHandle
		dev string
	}{{l.g1, testLinkPrefix + "-g1"}, {l.g2, testLinkPrefix + "-g2"}} {
		for _, dev := range []string{"all", g.dev} {
			if err := testhost.InNetns(g.ns, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/accept_redirects", []byte("0\n"), 0o644)
			}); err != nil {
				t.Fatal(err)
			}
		}
	}

	for _, s := range []struct {
		ns   netns.NsHandle
		tcp  []string
		udp  []string
		name string
	}{
		{host, []string{":8080", ":53"}, []string{":53", ":5353", ":8080"}, "host"},
		{l.g2, []string{":8080"}, []string{":7000"}, "guest2"},
		{l.up, []string{":8080"}, []string{":7000"}, "upstream"},
	} {
		for _, a := range s.tcp {
			l.serveTCP(s.ns, a)
		}
		for _, a := range s.udp {
			l.serveUDP(s.ns, a)
		}
	}
	return l
}

func (l *lab) addRoute(ns netns.NsHandle, dst string, gw netip.Addr) {
	l.t.Helper()
	hn := l.nl(ns)
	r := &netlink.Route{Gw: gw.AsSlice()}
	if p := netip.MustParsePrefix(dst); p.Bits() > 0 {
		r.Dst = ipNet(p)
	}
	if err := hn.RouteReplace(r); err != nil {
		l.t.Fatalf("route %s via %s: %v", dst, gw, err)
	}
}

func (l *lab) delRoute(ns netns.NsHandle, dst string) {
	l.t.Helper()
	hn := l.nl(ns)
	if err := hn.RouteDel(&netlink.Route{Dst: ipNet(netip.MustParsePrefix(dst))}); err != nil {
		l.t.Fatalf("delete route %s: %v", dst, err)
	}
}

func (l *lab) neigh(ns netns.NsHandle, dev string, ip netip.Addr, mac net.HardwareAddr) {
	l.t.Helper()
	hn := l.nl(ns)
	if err := hn.NeighSet(&netlink.Neigh{LinkIndex: mustLink(l.t, hn, dev).Attrs().Index, Family: unix.AF_INET,
		State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}); err != nil {
		l.t.Fatalf("neighbour %s: %v", ip, err)
	}
}

func (l *lab) addAddr(ns netns.NsHandle, dev string, a netip.Addr) {
	l.t.Helper()
	hn := l.nl(ns)
	if err := hn.AddrAdd(mustLink(l.t, hn, dev), &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 32))}); err != nil {
		l.t.Fatal(err)
	}
}

// apply installs p with both guests' ports guarded.
func (l *lab) apply(p Policy) {
	l.t.Helper()
	l.policy = p
	if err := l.h.EnsurePolicy(p, l.ports); err != nil {
		l.t.Fatalf("EnsurePolicy(%+v): %v", p, err)
	}
}

func (l *lab) marker() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return fmt.Sprintf("bgrt-marker-%d-%d", os.Getpid(), l.n)
}

func (l *lab) record(marker, from string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[marker] = from
}

func (l *lab) saw(marker string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	from, ok := l.seen[marker]
	return from, ok
}

// serveTCP listens on addr in ns and records the first line of each
// connection.
func (l *lab) serveTCP(ns netns.NsHandle, addr string) {
	l.t.Helper()
	var ln net.Listener
	if err := testhost.InNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		l.t.Fatalf("listen tcp %s: %v", addr, err)
	}
	l.top.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				if n, _ := c.Read(buf); n > 0 {
					l.record(string(buf[:n]), c.RemoteAddr().String())
					c.Write(buf[:n])
				}
			}()
		}
	}()
}

// serveUDP echoes datagrams on addr in ns and records them.
func (l *lab) serveUDP(ns netns.NsHandle, addr string) {
	l.t.Helper()
	var pc net.PacketConn
	if err := testhost.InNetns(ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		l.t.Fatalf("listen udp %s: %v", addr, err)
	}
	l.top.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			l.record(string(buf[:n]), from.String())
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// How long a check waits: an allowed connection between namespaces takes
// milliseconds; a dropped one is given this long to show up anyway.
const (
	allowedWait = 3 * time.Second
	droppedWait = 700 * time.Millisecond
)

// routeGuestsViaGateway makes the guests reach each other through the
// host (routed, both ways) instead of directly on the bridge, or undoes it.
func (l *lab) routeGuestsViaGateway(on bool) {
	l.t.Helper()
	for _, r := range []struct {
		ns  netns.NsHandle
		dst netip.Addr
	}{{l.g1, labG2}, {l.g2, labG1}} {
		dst := netip.PrefixFrom(r.dst, 32).String()
		if on {
			l.addRoute(r.ns, dst, labGW)
		} else {
			l.delRoute(r.ns, dst)
		}
	}
}

// tcp checks whether guest1, from source src (its lease when invalid),
// reaches dst over TCP. A blocked connection must be dropped (a timeout),
// not refused: a refusal would mean the packet reached its target.
// It returns the address the server saw.
func (l *lab) tcp(src netip.Addr, dst netip.AddrPort, want bool) string {
	l.t.Helper()
	marker := l.marker()
	d := net.Dialer{Timeout: droppedWait}
	if want {
		d.Timeout = allowedWait
	}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var c net.Conn
	err := testhost.InNetns(l.g1, func() (err error) { c, err = d.Dial("tcp4", dst.String()); return err })
	if err == nil {
		c.SetDeadline(time.Now().Add(allowedWait))
		_, err = c.Write([]byte(marker))
		if err == nil {
			buf := make([]byte, 64)
			_, err = c.Read(buf) // the echo: the server has recorded it
		}
		c.Close()
	}
	from, seen := l.saw(marker)
	switch src := source(src); {
	case want && (err != nil || !seen):
		l.t.Errorf("guest1 (from %s) -> %s tcp: %v (server saw it: %v), want a connection", src, dst, err, seen)
	case !want && err == nil:
		l.t.Errorf("guest1 (from %s) -> %s tcp: connected, want it dropped", src, dst)
	case !want && !isTimeout(err):
		l.t.Errorf("guest1 (from %s) -> %s tcp: %v, want a timeout (dropped, not refused)", src, dst, err)
	case !want && seen:
		l.t.Errorf("guest1 (from %s) -> %s tcp: the server saw the marker from %s, want nothing through", src, dst, from)
	}
	return from
}

// source names the source address of a check.
func source(src netip.Addr) string {
	if !src.IsValid() {
		return "its lease"
	}
	return src.String()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// udp checks whether a datagram from guest1 (from src, its lease when
// invalid) reaches dst and the echo comes back.
func (l *lab) udp(src netip.Addr, dst netip.AddrPort, want bool) {
	l.t.Helper()
	marker := l.marker()
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = &net.UDPAddr{IP: src.AsSlice()}
	}
	var c *net.UDPConn
	if err := testhost.InNetns(l.g1, func() (err error) { c, err = net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(dst)); return err }); err != nil {
		l.t.Fatalf("udp socket in guest1: %v", err)
	}
	defer c.Close()
	wait := droppedWait
	if want {
		wait = allowedWait
	}
	deadline := time.Now().Add(wait)
	echoed := false
	buf := make([]byte, 64)
	for !echoed && time.Now().Before(deadline) {
		c.Write([]byte(marker)) // errors (ICMP) count as no echo
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		echoed = err == nil && string(buf[:n]) == marker
	}
	from, seen := l.saw(marker)
	switch src := source(src); {
	case want && !echoed:
		l.t.Errorf("guest1 (from %s) -> %s udp: no echo (server saw it: %v), want one", src, dst, seen)
	case !want && (echoed || seen):
		l.t.Errorf("guest1 (from %s) -> %s udp: got through (server saw it from %q), want it dropped", src, dst, from)
	}
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// l2 sends frame (which contains marker) from guest1's interface three
// times and reports whether it arrived on guest2's.
func (l *lab) l2(frame []byte, marker string) bool {
	l.t.Helper()
	rx := packetSocket(l.t, l.g2, testLinkPrefix+"-g2")
	defer unix.Close(rx)
	tx := packetSocket(l.t, l.g1, testLinkPrefix+"-g1")
	defer unix.Close(tx)
	for range 3 {
		if _, err := unix.Write(tx, frame); err != nil {
			l.t.Fatalf("send frame from guest1: %v", err)
		}
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		l.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(rx, buf, 0)
		if err == nil && bytes.Contains(buf[:n], []byte(marker)) {
			return true
		}
	}
	return false
}

// packetSocket opens an AF_PACKET socket on dev in ns that sends and
// receives whole Ethernet frames.
func packetSocket(t *testing.T, ns netns.NsHandle, dev string) int {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	var fd int
	err := testhost.InNetns(ns, func() error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: link.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", dev, err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := append(append([]byte(nil), dst...), src...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

// ipv4UDP is a valid IPv4 packet carrying a UDP datagram (to the discard
// port) with payload.
func ipv4UDP(src, dst netip.Addr, payload string) []byte {
	udp := binary.BigEndian.AppendUint16(nil, 9)
	udp = binary.BigEndian.AppendUint16(udp, 9)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(binary.BigEndian.AppendUint16(udp, 0), payload...) // checksum 0: none
	h := []byte{0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
	h = append(append(h, src.AsSlice()...), dst.AsSlice()...)
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, udp...)
}

// arp is an Ethernet/IPv4 ARP reply (a gratuitous announcement when spa is
// also the target) with trailer after it (padding, to the kernel).
func arp(sha net.HardwareAddr, spa netip.Addr, trailer string) []byte {
	b := []byte{0, 1, 0x08, 0, 6, 4, 0, 2}
	b = append(append(b, sha...), spa.AsSlice()...)
	b = append(append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), spa.AsSlice()...)
	return append(b, trailer...)
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// frames returns the frames TestPolicyTraffic sends from guest1 to guest2,
// each with the marker, and whether each is legitimate (carries guest1's
// own MAC and address).
func (l *lab) frames() []struct {
	name  string
	frame []byte
	legit bool
	mark  string
} {
	var out []struct {
		name  string
		frame []byte
		legit bool
		mark  string
	}
	add := func(name string, legit bool, build func(m string) []byte) {
		m := l.marker()
		out = append(out, struct {
			name  string
			frame []byte
			legit bool
			mark  string
		}{name, build(m), legit, m})
	}
	ip4 := uint16(etherTypeIPv4)
	add("IPv4 from its own MAC and address", true, func(m string) []byte {
		return append(ethHeader(l.g2MAC, l.g1MAC, ip4), ipv4UDP(labG1, labG2, m)...)
	})
	add("IPv4 from another MAC", false, func(m string) []byte {
		return append(ethHeader(l.g2MAC, otherMAC, ip4), ipv4UDP(labG1, labG2, m)...)
	})
	add("IPv4 from another address", false, func(m string) []byte {
		return append(ethHeader(l.g2MAC, l.g1MAC, ip4), ipv4UDP(labSpoof, labG2, m)...)
	})
	add("IPv4 from the gateway's address", false, func(m string) []byte {
		return append(ethHeader(l.g2MAC, l.g1MAC, ip4), ipv4UDP(labGW, labG2, m)...)
	})
	add("IPv4 in a VLAN tag", false, func(m string) []byte {
		return append(append(ethHeader(l.g2MAC, l.g1MAC, 0x8100), 0, 5, 0x08, 0), ipv4UDP(labG1, labG2, m)...)
	})
	add("IPv6", false, func(m string) []byte {
		h := []byte{0x60, 0, 0, 0, 0, 0, 59, 64} // no next header
		binary.BigEndian.PutUint16(h[4:], uint16(len(m)))
		h = append(h, netip.MustParseAddr("fe80::5054:ff:fe00:102").AsSlice()...)
		h = append(h, netip.MustParseAddr("ff02::1").AsSlice()...)
		return append(append(ethHeader(l.g2MAC, l.g1MAC, 0x86dd), h...), m...)
	})
	add("another ethertype", false, func(m string) []byte {
		return append(ethHeader(l.g2MAC, l.g1MAC, 0x88b5), m...)
	})
	add("ARP announcing its own address", true, func(m string) []byte {
		return append(ethHeader(broadcast, l.g1MAC, etherTypeARP), arp(l.g1MAC, labG1, m)...)
	})
	add("ARP claiming guest2's address", false, func(m string) []byte {
		return append(ethHeader(broadcast, l.g1MAC, etherTypeARP), arp(l.g1MAC, labG2, m)...)
	})
	add("ARP with another sender MAC", false, func(m string) []byte {
		return append(ethHeader(broadcast, l.g1MAC, etherTypeARP), arp(otherMAC, labG1, m)...)
	})
	add("ARP from another source MAC", false, func(m string) []byte {
		return append(ethHeader(broadcast, otherMAC, etherTypeARP), arp(l.g1MAC, labG1, m)...)
	})
	return out
}

// TestPolicyTraffic checks with real traffic what a guest reaches under
// each policy and that it cannot send as anyone else.
func TestPolicyTraffic(t *testing.T) {
	l := newLab(t)
	setIPForward(t, l.host, "0") // EnsurePolicy must turn it on itself
	l.apply(Policy{Bridge: testBridge, Subnet: labSubnet})

	t.Run("default", func(t *testing.T) {
		l.t = t
		// The internet and the LAN, through the masquerade.
		if from := l.tcp(netip.Addr{}, ap(labUp, 8080), true); from != "" && netip.MustParseAddrPort(from).Addr() != labHostUp {
			t.Errorf("upstream saw guest1 as %s, want the host's %s (masquerade)", from, labHostUp)
		}
		l.udp(netip.Addr{}, ap(labUp, 7000), true)
		l.tcp(netip.Addr{}, ap(labUpLAN, 8080), true)
		l.tcp(netip.Addr{}, ap(labUpCGN, 8080), true)
		// Each other, directly and routed through the host.
		l.tcp(netip.Addr{}, ap(labG2, 8080), true)
		l.udp(netip.Addr{}, ap(labG2, 7000), true)
		l.routeGuestsViaGateway(true)
		l.tcp(netip.Addr{}, ap(labG2, 8080), true)
		l.routeGuestsViaGateway(false)
		// The host: DNS on the bridge address only, nothing else.
		l.udp(netip.Addr{}, ap(labGW, 53), true)
		l.tcp(netip.Addr{}, ap(labGW, 53), true)
		l.udp(netip.Addr{}, ap(labHostUp, 53), false)
		l.tcp(netip.Addr{}, ap(labGW, 8080), false)
		l.tcp(netip.Addr{}, ap(labHostUp, 8080), false)
		l.udp(netip.Addr{}, ap(labGW, 5353), false)
		l.tcp(netip.Addr{}, ap(labGW, 8081), false) // no listener: dropped, not refused
		// Link-local, on the host and forwarded.
		l.tcp(netip.Addr{}, ap(labMeta, 8080), false)
		l.tcp(netip.Addr{}, ap(labUpMeta, 8080), false)
	})

	t.Run("spoofed source address", func(t *testing.T) {
		l.t = t
		l.addAddr(l.g1, testLinkPrefix+"-g1", labSpoof)
		l.tcp(labSpoof, ap(labGW, 53), false)
		l.udp(labSpoof, ap(labGW, 53), false)
		l.udp(labSpoof, ap(labUp, 7000), false)
		l.udp(labSpoof, ap(labG2, 7000), false)
		l.udp(netip.Addr{}, ap(labG2, 7000), true) // the lease still works
	})

	t.Run("frames", func(t *testing.T) {
		l.t = t
		for _, f := range l.frames() {
			if got := l.l2(f.frame, f.mark); got != f.legit {
				t.Errorf("%s: arrived at guest2 = %v, want %v", f.name, got, f.legit)
			}
		}
	})

	t.Run("host ports", func(t *testing.T) {
		l.t = t
		l.apply(Policy{Bridge: testBridge, Subnet: labSubnet, HostTCPPorts: []uint16{8080}, HostUDPPorts: []uint16{5353}})
		l.tcp(netip.Addr{}, ap(labGW, 8080), true)
		l.tcp(netip.Addr{}, ap(labHostUp, 8080), true) // any host address
		l.udp(netip.Addr{}, ap(labGW, 5353), true)
		l.tcp(netip.Addr{}, ap(labGW, 8081), false)
		l.udp(netip.Addr{}, ap(labGW, 8080), false) // 8080 is open for tcp only
		l.tcp(netip.Addr{}, ap(labMeta, 8080), false)
		l.tcp(labSpoof, ap(labGW, 8080), false)
	})

	t.Run("isolate vms", func(t *testing.T) {
		l.t = t
		l.apply(Policy{Bridge: testBridge, Subnet: labSubnet, IsolateVMs: true})
		l.tcp(netip.Addr{}, ap(labG2, 8080), false)
		l.udp(netip.Addr{}, ap(labG2, 7000), false)
		l.routeGuestsViaGateway(true)
		l.tcp(netip.Addr{}, ap(labG2, 8080), false)
		l.routeGuestsViaGateway(false)
		for _, f := range l.frames() { // ARP never meets the IPv4 rules
			if l.l2(f.frame, f.mark) {
				t.Errorf("%s: arrived at guest2, want nothing between guests", f.name)
			}
		}
		l.tcp(netip.Addr{}, ap(labUp, 8080), true)
		l.udp(netip.Addr{}, ap(labGW, 53), true)
	})

	t.Run("no private destinations", func(t *testing.T) {
		l.t = t
		l.apply(Policy{Bridge: testBridge, Subnet: labSubnet, DenyPrivate: true})
		l.tcp(netip.Addr{}, ap(labUpLAN, 8080), false)
		l.tcp(netip.Addr{}, ap(labUpCGN, 8080), false)
		l.tcp(netip.Addr{}, ap(labUp, 8080), true)
		l.tcp(netip.Addr{}, ap(labG2, 8080), true) // the VM subnet stays reachable
		l.udp(netip.Addr{}, ap(labGW, 53), true)
	})
	if got := readIPForward(t, l.host); got != "1" {
		t.Errorf("ip_forward = %s after EnsurePolicy, want 1", got)
	}
}
