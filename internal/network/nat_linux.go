package network

import (
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

// NATTable is the name of the nftables table (family ip) that EnsureNAT owns.
// banger never reads or changes any other table.
const NATTable = "banger"

// Names of the chains in NATTable.
const (
	natPostroutingChain = "postrouting"
	natForwardChain     = "forward"
)

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

// nftError turns the kernel's answers for "no nftables here" and "no
// privilege" into errors that say what to do.
func nftError(err error) error {
	switch {
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%w: this kernel has no nftables (nfnetlink) support; banger's NAT needs a kernel with "+
			"CONFIG_NF_TABLES, or load the modules with `sudo modprobe -a nf_tables nft_chain_nat nft_masq nft_ct`", err)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: the kernel lacks an nftables feature that banger's NAT needs; "+
			"load the modules with `sudo modprobe -a nf_tables nft_chain_nat nft_masq nft_ct`", err)
	}
	return privileged(err)
}

// EnsureNAT lets guests on subnet reach the outside world through the Host's
// namespace. It installs, in one atomic nftables transaction, the table
// NATTable (family ip), replacing any previous version of it, with:
//
//   - chain postrouting (type nat, hook postrouting, priority srcnat):
//     ip saddr SUBNET oifname != BRIDGE masquerade
//   - chain forward (type filter, hook forward, priority 0, policy accept):
//     iifname BRIDGE accept; oifname BRIDGE ct state established,related accept
//
// and then enables IPv4 forwarding (net.ipv4.ip_forward=1) in the namespace.
// It is idempotent and touches no other table. RemoveNAT undoes the table but
// not ip_forward.
//
// The forward chain makes banger's intent explicit, but nftables runs every
// base chain on a hook and a drop in any of them is final: a forward chain of
// another table (for example iptables' FORWARD with policy DROP, as Docker
// sets it) still drops guest traffic, and EnsureNAT does not change it.
//
// When the kernel has no nftables support the error says which modules to
// load; without CAP_NET_ADMIN it wraps ErrNeedCapNetAdmin.
func (h *Host) EnsureNAT(subnet netip.Prefix, bridge string) error {
	if err := checkSubnet(subnet); err != nil {
		return fmt.Errorf("ensure nat: %w", err)
	}
	subnet = subnet.Masked()
	if err := checkLinkName(bridge); err != nil {
		return fmt.Errorf("ensure nat for %s: bridge: %w", subnet, err)
	}
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("ensure nat for %s: %w", subnet, err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable}
	// Add (a no-op if it exists), delete, add: the usual way to replace a
	// table in one transaction whether or not it exists, so the rules are
	// never half-installed and never installed twice.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	for _, ch := range natChains(table, subnet, bridge) {
		c.AddChain(ch.chain)
		for _, exprs := range ch.rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: ch.chain, Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("ensure nat for %s: install nftables table ip %s: %w", subnet, NATTable, nftError(err))
	}
	// Forwarding goes on only once masquerading is in place, so guest
	// traffic never leaves with its private source address.
	if err := h.inNS(enableIPForward); err != nil {
		return fmt.Errorf("ensure nat for %s: %w", subnet, err)
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

// RemoveNAT deletes the table NATTable and everything in it. It returns nil
// when the table does not exist or the kernel has no nftables at all. It
// leaves net.ipv4.ip_forward as it is, since other software may rely on it.
func (h *Host) RemoveNAT() error {
	c, err := h.nftConn()
	if err != nil {
		return fmt.Errorf("remove nat: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable}
	c.AddTable(table) // so that the delete cannot fail with ENOENT
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			return nil
		}
		return fmt.Errorf("remove nat: delete nftables table ip %s: %w", NATTable, nftError(err))
	}
	return nil
}

// EnsureNAT is New().EnsureNAT(subnet, bridge) for the process's own
// namespace.
func EnsureNAT(subnet netip.Prefix, bridge string) error {
	return withHost(func(h *Host) error { return h.EnsureNAT(subnet, bridge) })
}

// RemoveNAT is New().RemoveNAT() for the process's own namespace.
func RemoveNAT() error {
	return withHost(func(h *Host) error { return h.RemoveNAT() })
}

type natChain struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// natChains builds the chains and rules of EnsureNAT's table.
func natChains(table *nftables.Table, subnet netip.Prefix, bridge string) []natChain {
	accept := nftables.ChainPolicyAccept
	post := &nftables.Chain{
		Name:     natPostroutingChain,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
		Policy:   &accept,
	}
	fwd := &nftables.Chain{
		Name:     natForwardChain,
		Table:    table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	}
	verdictAccept := &expr.Verdict{Kind: expr.VerdictAccept}
	return []natChain{
		{chain: post, rules: [][]expr.Any{
			// ip saddr SUBNET oifname != BRIDGE masquerade
			concat(matchSaddr(subnet), matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bridge), []expr.Any{&expr.Masq{}}),
		}},
		{chain: fwd, rules: [][]expr.Any{
			// iifname BRIDGE accept
			concat(matchIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), []expr.Any{verdictAccept}),
			// oifname BRIDGE ct state established,related accept
			concat(matchIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge), matchEstablished(), []expr.Any{verdictAccept}),
		}},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// matchSaddr is "ip saddr PREFIX".
func matchSaddr(p netip.Prefix) []expr.Any {
	return []expr.Any{
		// The source address sits at offset 12 of the IPv4 header.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// matchIfname is "iifname/oifname ==/!= NAME".
func matchIfname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	// The kernel compares the whole IFNAMSIZ buffer, NUL padded, as nft does.
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
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
