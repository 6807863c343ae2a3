package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The guest network policy lives in three nftables tables per bridge, all
// called TableName(bridge), so that daemons with different bridges in one
// namespace never touch each other's rules:
//
//	table ip banger-BR       NAT, and what guests reach on the host and
//	                         through it (chains postrouting, input, forward)
//	table bridge banger-BR   the set of guarded ports, and the VM-to-VM drop
//	                         of isolate_vms (chain forward)
//	table netdev banger-BR   one chain per guarded port, on the ingress hook
//	                         of its device: the anti-spoofing guard
//
// The per-port guard sits on the device's own ingress hook rather than in a
// bridge-family chain because a bridge-family rule cannot tell which bridge
// a frame is on without nft_meta_bridge (meta ibrname), which some kernels
// lack (CONFIG_NFT_BRIDGE_META); a device hook needs nothing but the device.

// TableName returns the name of banger's nftables tables for the bridge
// called bridge (one each in the ip, bridge and netdev families). banger
// never reads or changes any other table, except that EnsurePolicy deletes
// the table "ip banger" that earlier versions used.
func TableName(bridge string) string { return "banger-" + bridge }

// legacyNATTable is the single table earlier versions installed.
const legacyNATTable = "banger"

// Names of the chains and the set in the policy tables.
const (
	postroutingChain = "postrouting"
	inputChain       = "input"
	forwardChain     = "forward"
	portsSet         = "ports"
	portChainPrefix  = "port-"
)

// bridgeFilterPriority is the bridge family's "filter" priority (-200).
var bridgeFilterPriority = nftables.ChainPriorityRef(-200)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

func (h *Host) nftConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if h.ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(h.ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables connection: %w", nftError(err))
	}
	return c, nil
}

// nftModules are the kernel modules the policy uses, where they are modules
// (current kernels build the ip, bridge and netdev families into nf_tables).
const nftModules = "nf_tables nft_chain_nat nft_masq nft_ct"

// nftError turns the kernel's answers for "no nftables here" and "no
// privilege" into errors that say what to do.
func nftError(err error) error {
	switch {
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%w: this kernel has no nftables (nfnetlink) support; banger's network policy needs a kernel with "+
			"CONFIG_NF_TABLES, or load the modules with `sudo modprobe -a %s`", err, nftModules)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: the kernel lacks an nftables feature that banger's network policy needs; "+
			"load the modules with `sudo modprobe -a %s`", err, nftModules)
	}
	return privileged(err)
}

// EnsurePolicy installs policy p for the guests on p.Bridge, guarding ports,
// and enables IPv4 forwarding (net.ipv4.ip_forward=1) once it is in place.
// One atomic nftables transaction replaces the three tables TableName(p.Bridge)
// (see the comment at the top of this file) with:
//
//	table ip: chain postrouting (nat): ip saddr SUBNET oifname != BR masquerade
//	  chain input (filter, policy accept), for iifname BR:
//	    ip daddr 169.254.0.0/16 drop; ct state established,related accept;
//	    ip daddr GATEWAY udp/tcp dport 53 accept; tcp/udp dport HOSTPORT accept; drop
//	  chain forward (filter, policy accept):
//	    iifname BR ip daddr 169.254.0.0/16 drop
//	    iifname BR oifname BR drop                                 (IsolateVMs)
//	    iifname BR ip daddr != SUBNET ip daddr PRIVATE drop        (DenyPrivate)
//	    iifname BR accept; oifname BR ct state established,related accept
//	table bridge: set ports { type ifname } with every port's name
//	  chain forward (filter, policy accept): iifname @ports drop   (IsolateVMs)
//	table netdev: per port a chain on the ingress hook of its device (policy drop):
//	    ether saddr MAC ether type ip ip saddr IP accept
//	    ether saddr MAC ether type arp (Ethernet/IPv4) arp saddr ether MAC arp saddr ip IP accept
//
// so it is idempotent, never leaves rules half-installed, and drops the
// guard of any port left out of ports. Ports whose device does not exist
// are left out (they carry nothing; GuardPort adds them when they exist).
//
// nftables runs every base chain on a hook and a drop in any of them is
// final, so the accepts here widen nothing that another table (for example
// iptables' FORWARD with policy DROP, as Docker sets it) drops.
//
// When the kernel has no nftables support the error says which modules to
// load; without CAP_NET_ADMIN it wraps ErrNeedCapNetAdmin.
func (h *Host) EnsurePolicy(p Policy, ports []Port) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("ensure network policy: %w", err)
	}
	p.Subnet = p.Subnet.Masked()
	var present []Port
	for _, port := range ports {
		if err := port.check(); err != nil {
			return fmt.Errorf("ensure network policy for bridge %q: %w", p.Bridge, err)
		}
		link, err := h.linkByName(port.Name)
		if err != nil {
			return fmt.Errorf("ensure network policy for bridge %q: port %q: %w", p.Bridge, port.Name, err)
		}
		if link != nil {
			present = append(present, port)
		}
	}
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("ensure network policy for bridge %q: %w", p.Bridge, err)
	}
	deleteTable(c, nftables.TableFamilyIPv4, legacyNATTable)
	name := TableName(p.Bridge)
	// Add (a no-op if it exists), delete, add: the usual way to replace a
	// table in one transaction whether or not it exists.
	ipT := deleteTable(c, nftables.TableFamilyIPv4, name)
	c.AddTable(ipT)
	brT := deleteTable(c, nftables.TableFamilyBridge, name)
	c.AddTable(brT)
	ndT := deleteTable(c, nftables.TableFamilyNetdev, name)
	c.AddTable(ndT)
	addChains(c, ipChains(ipT, p))
	set := newPortsSet(brT)
	if err := c.AddSet(set, portElements(present)); err != nil {
		return fmt.Errorf("ensure network policy for bridge %q: %w", p.Bridge, err)
	}
	addChains(c, bridgeChains(brT, set, p.IsolateVMs))
	for _, port := range present {
		addChains(c, []chainRules{portChain(ndT, port)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("ensure network policy for bridge %q: install nftables tables %s: %w", p.Bridge, name, nftError(err))
	}
	// Forwarding goes on only once the policy and masquerading are in
	// place, so guest traffic never leaves unfiltered or with its private
	// source address.
	if err := h.inNS(enableIPForward); err != nil {
		return fmt.Errorf("ensure network policy for bridge %q: %w", p.Bridge, err)
	}
	return nil
}

func enableIPForward() error {
	if b, err := os.ReadFile(ipForwardPath); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", privileged(err))
	}
	return nil
}

// deleteTable queues the deletion of a table whether or not it exists (the
// add makes the delete unable to fail with ENOENT) and returns the table.
func deleteTable(c *nftables.Conn, family nftables.TableFamily, name string) *nftables.Table {
	t := &nftables.Table{Family: family, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	return t
}

// RemovePolicy deletes the policy tables of bridge and everything in them.
// It returns nil when they do not exist or the kernel has no nftables at
// all. It leaves net.ipv4.ip_forward as it is, since other software may rely
// on it.
func (h *Host) RemovePolicy(bridge string) error {
	if err := checkLinkName(bridge); err != nil {
		return fmt.Errorf("remove network policy: bridge: %w", err)
	}
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("remove network policy for bridge %q: %w", bridge, err)
	}
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge, nftables.TableFamilyNetdev} {
		deleteTable(c, f, TableName(bridge))
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			return nil
		}
		return fmt.Errorf("remove network policy for bridge %q: delete nftables tables %s: %w", bridge, TableName(bridge), nftError(err))
	}
	return nil
}

// GuardPort puts port under the policy of bridge: from now on the device
// port.Name may send only IPv4 and ARP, with port.MAC as Ethernet source and
// port.IP as sender address (anything else is dropped as it enters, before
// the bridge sees it), and IsolateVMs applies to it. The device must exist
// and should be attached to bridge; call it before anything behind the
// device can send (for a VM: after creating its TAP, before starting the
// VMM). It is idempotent, replaces an earlier guard of the same device in
// one atomic transaction, and creates the tables it needs when EnsurePolicy
// has not run, but only EnsurePolicy installs the rest of the policy (and a
// later EnsurePolicy drops the guard unless port is in its list). Undo it
// with UnguardPort when the device goes away.
func (h *Host) GuardPort(bridge string, port Port) error {
	if err := checkLinkName(bridge); err != nil {
		return fmt.Errorf("guard port: bridge: %w", err)
	}
	if err := port.check(); err != nil {
		return fmt.Errorf("guard port: %w", err)
	}
	link, err := h.linkByName(port.Name)
	if err != nil {
		return fmt.Errorf("guard port %q: %w", port.Name, err)
	}
	if link == nil {
		return fmt.Errorf("guard port %q: no such network device", port.Name)
	}
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("guard port %q: %w", port.Name, err)
	}
	name := TableName(bridge)
	brT := c.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: name})
	set := newPortsSet(brT)
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("guard port %q: %w", port.Name, err)
	}
	if err := c.SetAddElements(set, portElements([]Port{port})); err != nil {
		return fmt.Errorf("guard port %q: %w", port.Name, err)
	}
	ndT := c.AddTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: name})
	// Adding an existing chain with the same hook updates it; the flush
	// then drops its old rules in the same transaction.
	pc := portChain(ndT, port)
	c.AddChain(pc.chain)
	c.FlushChain(pc.chain)
	addRules(c, pc)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("guard port %q: install its rules in nftables tables %s: %w", port.Name, name, nftError(err))
	}
	return nil
}

// UnguardPort removes the guard GuardPort (or EnsurePolicy) put on the
// device called name. It returns nil when there is none, and works whether
// or not the device still exists (some kernels drop a device's chain with
// the device, others keep it until it is deleted).
func (h *Host) UnguardPort(bridge, name string) error {
	if err := checkLinkName(bridge); err != nil {
		return fmt.Errorf("unguard port: bridge: %w", err)
	}
	if err := checkLinkName(name); err != nil {
		return fmt.Errorf("unguard port: %w", err)
	}
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("unguard port %q: %w", name, err)
	}
	table := TableName(bridge)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return fmt.Errorf("unguard port %q: list nftables chains: %w", name, nftError(err))
	}
	queued := false
	for _, ch := range chains {
		if ch.Table.Name == table && ch.Name == portChainPrefix+name {
			c.FlushChain(ch)
			c.DelChain(ch)
			queued = true
		}
	}
	brT := &nftables.Table{Family: nftables.TableFamilyBridge, Name: table}
	if set, err := c.GetSetByName(brT, portsSet); err == nil {
		// Add, then delete: a delete of a missing element would fail.
		elems := portElements([]Port{{Name: name}})
		if err := c.SetAddElements(set, elems); err != nil {
			return fmt.Errorf("unguard port %q: %w", name, err)
		}
		if err := c.SetDeleteElements(set, elems); err != nil {
			return fmt.Errorf("unguard port %q: %w", name, err)
		}
		queued = true
	}
	if !queued {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("unguard port %q: remove its rules from nftables tables %s: %w", name, table, nftError(err))
	}
	return nil
}

// EnsurePolicy is New().EnsurePolicy(p, ports) for the process's own
// namespace.
func EnsurePolicy(p Policy, ports []Port) error {
	return withHost(func(h *Host) error { return h.EnsurePolicy(p, ports) })
}

// RemovePolicy is New().RemovePolicy(bridge) for the process's own namespace.
func RemovePolicy(bridge string) error {
	return withHost(func(h *Host) error { return h.RemovePolicy(bridge) })
}

// GuardPort is New().GuardPort(bridge, port) for the process's own namespace.
func GuardPort(bridge string, port Port) error {
	return withHost(func(h *Host) error { return h.GuardPort(bridge, port) })
}

// UnguardPort is New().UnguardPort(bridge, name) for the process's own
// namespace.
func UnguardPort(bridge, name string) error {
	return withHost(func(h *Host) error { return h.UnguardPort(bridge, name) })
}

type chainRules struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

func addChains(c *nftables.Conn, chains []chainRules) {
	for _, ch := range chains {
		c.AddChain(ch.chain)
		addRules(c, ch)
	}
}

func addRules(c *nftables.Conn, ch chainRules) {
	for _, exprs := range ch.rules {
		c.AddRule(&nftables.Rule{Table: ch.chain.Table, Chain: ch.chain, Exprs: exprs})
	}
}

var (
	accept = []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	drop   = []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
)

func baseChain(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook,
	prio *nftables.ChainPriority, policy nftables.ChainPolicy) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &policy}
}

// ipChains builds the chains of the ip table (see EnsurePolicy).
func ipChains(t *nftables.Table, p Policy) []chainRules {
	fromBridge := matchIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, p.Bridge)
	toBridge := matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, p.Bridge)
	gw := netip.PrefixFrom(Gateway(p.Subnet), 32)

	input := [][]expr.Any{
		concat(fromBridge, matchAddr(ipDaddr, expr.CmpOpEq, LinkLocal), drop),
		concat(fromBridge, matchEstablished(), accept),
		concat(fromBridge, matchAddr(ipDaddr, expr.CmpOpEq, gw), matchDport(unix.IPPROTO_UDP, DNSPort), accept),
		concat(fromBridge, matchAddr(ipDaddr, expr.CmpOpEq, gw), matchDport(unix.IPPROTO_TCP, DNSPort), accept),
	}
	for _, port := range p.HostTCPPorts {
		input = append(input, concat(fromBridge, matchDport(unix.IPPROTO_TCP, port), accept))
	}
	for _, port := range p.HostUDPPorts {
		input = append(input, concat(fromBridge, matchDport(unix.IPPROTO_UDP, port), accept))
	}
	input = append(input, concat(fromBridge, drop))

	forward := [][]expr.Any{concat(fromBridge, matchAddr(ipDaddr, expr.CmpOpEq, LinkLocal), drop)}
	if p.IsolateVMs {
		forward = append(forward, concat(fromBridge, toBridge, drop))
	}
	if p.DenyPrivate {
		for _, private := range PrivatePrefixes {
			forward = append(forward, concat(fromBridge, matchAddr(ipDaddr, expr.CmpOpNeq, p.Subnet),
				matchAddr(ipDaddr, expr.CmpOpEq, private), drop))
		}
	}
	forward = append(forward,
		concat(fromBridge, accept),
		concat(toBridge, matchEstablished(), accept))

	return []chainRules{
		{chain: baseChain(t, postroutingChain, nftables.ChainTypeNAT, nftables.ChainHookPostrouting,
			nftables.ChainPriorityNATSource, nftables.ChainPolicyAccept),
			rules: [][]expr.Any{
				concat(matchAddr(ipSaddr, expr.CmpOpEq, p.Subnet), matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, p.Bridge),
					[]expr.Any{&expr.Masq{}}),
			}},
		{chain: baseChain(t, inputChain, nftables.ChainTypeFilter, nftables.ChainHookInput,
			nftables.ChainPriorityFilter, nftables.ChainPolicyAccept), rules: input},
		{chain: baseChain(t, forwardChain, nftables.ChainTypeFilter, nftables.ChainHookForward,
			nftables.ChainPriorityFilter, nftables.ChainPolicyAccept), rules: forward},
	}
}

// newPortsSet is the bridge table's set of guarded port names.
func newPortsSet(t *nftables.Table) *nftables.Set {
	// Interface names are strings, kept in host byte order (as nft does;
	// it then prints them).
	return &nftables.Set{Table: t, Name: portsSet, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

func portElements(ports []Port) []nftables.SetElement {
	out := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		out[i] = nftables.SetElement{Key: ifnameBytes(p.Name)}
	}
	return out
}

// bridgeChains builds the chains of the bridge table. Frames the bridge
// forwards from one port to another pass its forward hook; frames to and
// from the host do not.
func bridgeChains(t *nftables.Table, ports *nftables.Set, isolate bool) []chainRules {
	var rules [][]expr.Any
	if isolate {
		rules = append(rules, concat([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
		}, drop))
	}
	return []chainRules{{chain: baseChain(t, forwardChain, nftables.ChainTypeFilter, nftables.ChainHookForward,
		bridgeFilterPriority, nftables.ChainPolicyAccept), rules: rules}}
}

// Ethernet types and ARP header values (big endian on the wire).
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	arpHTypeEther = 1
)

// portChain builds the guard chain of one port (see EnsurePolicy).
func portChain(t *nftables.Table, p Port) chainRules {
	ch := baseChain(t, portChainPrefix+p.Name, nftables.ChainTypeFilter, nftables.ChainHookIngress,
		nftables.ChainPriorityFilter, nftables.ChainPolicyDrop)
	ch.Device = p.Name
	ip := p.IP.AsSlice()
	// meta iiftype ether: what makes the link-layer offsets below mean
	// Ethernet (and lets nft print them as ether and arp fields).
	srcMAC := concat([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
	}, matchPayload(expr.PayloadBaseLLHeader, 6, p.MAC))
	return chainRules{chain: ch, rules: [][]expr.Any{
		concat(srcMAC, matchPayload(expr.PayloadBaseLLHeader, 12, be16(etherTypeIPv4)),
			matchPayload(expr.PayloadBaseNetworkHeader, 12, ip), accept),
		concat(srcMAC, matchPayload(expr.PayloadBaseLLHeader, 12, be16(etherTypeARP)),
			// Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses:
			// the only ARP whose sender fields sit at these offsets.
			matchPayload(expr.PayloadBaseNetworkHeader, 0, be16(arpHTypeEther)),
			matchPayload(expr.PayloadBaseNetworkHeader, 2, be16(etherTypeIPv4)),
			matchPayload(expr.PayloadBaseNetworkHeader, 4, []byte{6, 4}),
			matchPayload(expr.PayloadBaseNetworkHeader, 8, p.MAC),
			matchPayload(expr.PayloadBaseNetworkHeader, 14, ip), accept),
	}}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// matchPayload is "@base,offset,len(data) == data" (a raw payload match).
func matchPayload(base expr.PayloadBase, offset uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append([]byte(nil), data...)},
	}
}

// Offsets of the addresses in the IPv4 header.
const (
	ipSaddr = 12
	ipDaddr = 16
)

// matchAddr is "ip saddr/daddr ==/!= PREFIX".
func matchAddr(offset uint32, op expr.CmpOp, p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// matchDport is "meta l4proto PROTO th dport PORT".
func matchDport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		// The destination port sits at offset 2 of both TCP and UDP headers.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
	}
}

// ifnameBytes is an interface name as the kernel compares it: the whole
// IFNAMSIZ buffer, NUL padded, as nft does.
func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// matchIfname is "iifname/oifname ==/!= NAME".
func matchIfname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(name)},
	}
}

// matchEstablished is "ct state established,related".
func matchEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}
