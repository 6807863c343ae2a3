package network

import (
	"fmt"
	"net"
	"net/netip"
)

// Policy is what the guests on one bridge may reach; [Host.EnsurePolicy]
// installs it. The zero value of every field after Subnet is the default
// policy:
//
//   - guests reach the internet and the LAN through NAT, and each other;
//   - they do not reach the host itself: traffic from the bridge to any host
//     address is dropped, except replies to connections the host opened
//     (conntrack established/related), DNS (udp and tcp port 53) on the
//     bridge address, reserved for banger's own DNS server, and
//     HostTCPPorts/HostUDPPorts;
//   - they reach nothing in LinkLocal (169.254.0.0/16, where clouds serve
//     instance metadata), neither on the host nor forwarded;
//   - each guarded bridge port ([Port]) sends only IPv4 and ARP with its
//     own MAC and IPv4 address as sender; everything else it sends (another
//     source, IPv6, VLAN tags, other ethertypes) is dropped where it enters.
type Policy struct {
	// Bridge is the bridge the guests are on, as given to EnsureBridge.
	Bridge string
	// Subnet is the guests' subnet (the bridge's), such as 172.30.0.0/24.
	Subnet netip.Prefix
	// HostTCPPorts and HostUDPPorts are host ports guests may reach, on
	// any host address except those in LinkLocal (network.host_ports).
	HostTCPPorts []uint16
	HostUDPPorts []uint16
	// IsolateVMs stops all traffic between guests: bridged between bridge
	// ports and routed back to the bridge through the host
	// (network.isolate_vms).
	IsolateVMs bool
	// DenyPrivate stops forwarding to PrivatePrefixes beyond Subnet
	// (network.private = false). Host ports are not affected.
	DenyPrivate bool
}

// DNSPort is the port guests may reach on the bridge address (udp and tcp)
// under every policy, for the DNS server banger serves guests.
const DNSPort = 53

// LinkLocal is 169.254.0.0/16 (RFC 3927), where cloud hosts serve instance
// metadata and credentials; guests never reach it.
var LinkLocal = netip.MustParsePrefix("169.254.0.0/16")

// PrivatePrefixes are the destinations that Policy.DenyPrivate blocks: the
// RFC 1918 ranges and the RFC 6598 shared address space (100.64.0.0/10),
// which carrier-grade NAT and overlay VPNs such as Tailscale use for private
// hosts.
var PrivatePrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

func (p Policy) check() error {
	if err := checkLinkName(p.Bridge); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if err := checkSubnet(p.Subnet); err != nil {
		return err
	}
	for _, ports := range [][]uint16{p.HostTCPPorts, p.HostUDPPorts} {
		for _, port := range ports {
			if port == 0 {
				return fmt.Errorf("host port 0: ports run from 1 to 65535")
			}
		}
	}
	return nil
}

// Port is one bridge port guarded by the policy: frames entering the bridge
// through the network device Name must carry MAC as their Ethernet source
// and, for IPv4 and ARP, IP as their sender address. A VM's TAP device is
// one; a veth whose peer is in a sandbox's network namespace is another.
type Port struct {
	Name string           // the network device (TAP, veth) on the bridge
	MAC  net.HardwareAddr // the only source MAC the port may send from
	IP   netip.Addr       // the only IPv4 source address it may send from
}

// ParsePort returns the Port for a device name, a MAC address such as
// 52:54:00:12:34:56 (a unicast address, see ValidMAC) and an IPv4 address.
func ParsePort(name, mac, ip string) (Port, error) {
	if !ValidMAC(mac) {
		return Port{}, fmt.Errorf("port %q: MAC address %q: want a unicast address such as 52:54:00:12:34:56", name, mac)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return Port{}, fmt.Errorf("port %q: MAC address %q: %w", name, mac, err)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return Port{}, fmt.Errorf("port %q: IP address %q: %w", name, ip, err)
	}
	p := Port{Name: name, MAC: hw, IP: addr}
	return p, p.check()
}

func (p Port) check() error {
	if err := checkLinkName(p.Name); err != nil {
		return fmt.Errorf("port: %w", err)
	}
	if len(p.MAC) != 6 || !ValidMAC(p.MAC.String()) {
		return fmt.Errorf("port %q: MAC address %q: want a 6-byte unicast address", p.Name, p.MAC)
	}
	if !p.IP.Is4() || p.IP.IsUnspecified() || p.IP.IsMulticast() || p.IP == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("port %q: IP address %s: want a unicast IPv4 address", p.Name, p.IP)
	}
	return nil
}
