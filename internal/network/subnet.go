package network

import (
	"fmt"
	"net/netip"
	"strings"
)

// defaultCandidates avoids the ranges other tools grab by default (Docker's
// 172.17-172.29, libvirt's 192.168.122, most home routers' 192.168.0/1 and
// 10.0.x) so that the first pick is usually free.
var defaultCandidates = []string{
	"172.30.0.0/24",
	"172.31.0.0/24",
	"10.213.0.0/24",
	"10.214.0.0/24",
	"10.215.0.0/24",
	"192.168.213.0/24",
	"192.168.214.0/24",
	"192.168.215.0/24",
}

// DefaultCandidates returns, in order of preference, the private /24 subnets
// banger tries for its bridge when the config does not set network.subnet.
// The caller owns the returned slice.
func DefaultCandidates() []netip.Prefix {
	out := make([]netip.Prefix, len(defaultCandidates))
	for i, s := range defaultCandidates {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// ChooseSubnet returns the first candidate that overlaps none of the existing
// prefixes (the host's route destinations and interface addresses, see
// HostPrefixes). Existing prefixes of length 0 (default routes), invalid ones
// and IPv6 ones are ignored. Invalid candidates are skipped. When every
// candidate collides it returns an error wrapping ErrNoFreeSubnet that tells
// the user to set network.subnet.
func ChooseSubnet(existing []netip.Prefix, candidates []netip.Prefix) (netip.Prefix, error) {
	var tried []string
	for _, c := range candidates {
		if !c.IsValid() {
			continue
		}
		c = c.Masked()
		tried = append(tried, c.String())
		if !overlapsAny(c, existing) {
			return c, nil
		}
	}
	if len(tried) == 0 {
		return netip.Prefix{}, fmt.Errorf("choose subnet: %w: no candidate subnets given; "+
			"set network.subnet in banger's config.toml to a free private /24", ErrNoFreeSubnet)
	}
	return netip.Prefix{}, fmt.Errorf("choose subnet: %w: every candidate (%s) overlaps a route or address on this host; "+
		"set network.subnet in banger's config.toml to a private /24 that is not in use (see `ip route` and `ip addr`)",
		ErrNoFreeSubnet, strings.Join(tried, ", "))
}

func overlapsAny(c netip.Prefix, existing []netip.Prefix) bool {
	for _, e := range existing {
		if !e.IsValid() || e.Bits() == 0 || !e.Addr().Is4() {
			continue
		}
		if c.Overlaps(e) {
			return true
		}
	}
	return false
}

// checkSubnet reports whether subnet can hold a gateway and at least one
// guest: an IPv4 prefix of length 30 or shorter.
func checkSubnet(subnet netip.Prefix) error {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return fmt.Errorf("subnet %s: need an IPv4 subnet of /30 or larger, such as 172.30.0.0/24", subnet)
	}
	return nil
}

// Gateway returns the bridge's address in subnet: the first host address
// (.1 in a /24). It returns the zero Addr when subnet is not an IPv4 prefix
// of length 30 or shorter.
func Gateway(subnet netip.Prefix) netip.Addr {
	if checkSubnet(subnet) != nil {
		return netip.Addr{}
	}
	return subnet.Masked().Addr().Next()
}

// GatewayPrefix returns the gateway address of subnet with the subnet's
// length (172.30.0.1/24 for 172.30.0.0/24), as EnsureBridge wants it. It
// returns the zero Prefix when Gateway would return the zero Addr.
func GatewayPrefix(subnet netip.Prefix) netip.Prefix {
	gw := Gateway(subnet)
	if !gw.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(gw, subnet.Bits())
}

// Broadcast returns the last address of an IPv4 subnet (.255 in a /24), or
// the zero Addr for anything but a valid IPv4 prefix.
func Broadcast(subnet netip.Prefix) netip.Addr {
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return netip.Addr{}
	}
	a := subnet.Masked().Addr().As4()
	host := uint32(1)<<(32-subnet.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AllocateIP returns the lowest address of subnet, from the second host
// address (.2) up, that is not in used. The network address, the gateway and
// the broadcast address are never returned; addresses in used that lie
// outside subnet are ignored. It returns an error wrapping ErrExhausted when
// no address is free, and an error when subnet is not an IPv4 prefix of
// length 30 or shorter.
func AllocateIP(subnet netip.Prefix, used []netip.Addr) (netip.Addr, error) {
	if err := checkSubnet(subnet); err != nil {
		return netip.Addr{}, fmt.Errorf("allocate ip: %w", err)
	}
	subnet = subnet.Masked()
	taken := make(map[netip.Addr]struct{}, len(used))
	for _, a := range used {
		taken[a.Unmap()] = struct{}{}
	}
	last := Broadcast(subnet)
	for a := Gateway(subnet).Next(); a.Less(last); a = a.Next() {
		if _, ok := taken[a]; !ok {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate ip in %s: %w: delete unused VMs or set a larger network.subnet",
		subnet, ErrExhausted)
}
