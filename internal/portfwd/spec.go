// Package portfwd forwards host ports to ports of a guest's loopback
// address through the guest agent session, not the guest network: a
// service the guest binds to 127.0.0.1 is reachable, and forwarding works
// whatever the guest's firewall or network state.
//
// Host side (the daemon): a Manager listens on each forwarded host port
// while its VM runs; every TCP connection, and every UDP client (by source
// address), gets its own agent stream (Op). Guest side (the agent):
// Handler connects to 127.0.0.1:PORT in the guest and copies bytes; for
// UDP each datagram travels as a frame (a 2-byte big-endian length, then
// the datagram).
package portfwd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Spec is one forward: HostAddr:HostPort on the host to GuestPort on the
// guest's 127.0.0.1, for Proto ("tcp" or "udp").
type Spec struct {
	HostAddr  netip.Addr
	HostPort  uint16
	GuestPort uint16
	Proto     string
}

// DefaultHostAddr is the host address of a spec that names none: only
// this host reaches the forward.
var DefaultHostAddr = netip.MustParseAddr("127.0.0.1")

// String is the spec's canonical form, HOST_ADDR:HOST_PORT:GUEST_PORT/PROTO
// ("[::1]:8080:80/tcp" for an IPv6 address); ParseSpec reads it back.
func (s Spec) String() string {
	return fmt.Sprintf("%s:%d/%s", netip.AddrPortFrom(s.HostAddr, s.HostPort), s.GuestPort, s.Proto)
}

// HostAddrPort is the host side's address and port.
func (s Spec) HostAddrPort() netip.AddrPort { return netip.AddrPortFrom(s.HostAddr, s.HostPort) }

// ParseSpec parses [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]: HOST_ADDR
// is an IPv4 address or a bracketed IPv6 one ([::1]), 127.0.0.1 when left
// out; ports run from 1 to 65535; the protocol is tcp unless given. The
// error says what is wrong and shows the form.
func ParseSpec(text string) (Spec, error) {
	bad := func(why string) (Spec, error) {
		return Spec{}, fmt.Errorf("forward %q: %s: use [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp], such as 8080:80 or 0.0.0.0:5353:53/udp", text, why)
	}
	s := Spec{Proto: "tcp", HostAddr: DefaultHostAddr}
	rest := strings.TrimSpace(text)
	if r, proto, ok := strings.Cut(rest, "/"); ok {
		if proto != "tcp" && proto != "udp" {
			return bad(fmt.Sprintf("protocol %q is neither tcp nor udp", proto))
		}
		rest, s.Proto = r, proto
	}
	if rest == "" {
		return bad("empty")
	}
	// The guest port is after the last colon, the host port before it,
	// and whatever is before that is the host address.
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("missing the guest port")
	}
	hostPart, guestPort := rest[:i], rest[i+1:]
	var hostAddr, hostPort string
	if j := strings.LastIndexByte(hostPart, ':'); j >= 0 && !strings.HasSuffix(hostPart, "]") {
		hostAddr, hostPort = hostPart[:j], hostPart[j+1:]
	} else {
		hostPort = hostPart
	}
	var err error
	if s.HostPort, err = parsePort(hostPort); err != nil {
		return bad("host port: " + err.Error())
	}
	if s.GuestPort, err = parsePort(guestPort); err != nil {
		return bad("guest port: " + err.Error())
	}
	if hostAddr != "" {
		if strings.HasPrefix(hostAddr, "[") != strings.HasSuffix(hostAddr, "]") {
			return bad(fmt.Sprintf("host address %q: unbalanced brackets", hostAddr))
		}
		a, err := netip.ParseAddr(strings.Trim(hostAddr, "[]"))
		if err != nil || a.Zone() != "" {
			return bad(fmt.Sprintf("host address %q is not an IP address", hostAddr))
		}
		if a.Is6() && !strings.HasPrefix(hostAddr, "[") {
			return bad(fmt.Sprintf("write the IPv6 host address in brackets: [%s]", hostAddr))
		}
		if a.IsMulticast() {
			return bad(fmt.Sprintf("host address %s is a multicast address", a))
		}
		s.HostAddr = a.Unmap()
	}
	return s, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("missing")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port from 1 to 65535", s)
	}
	return uint16(n), nil
}
