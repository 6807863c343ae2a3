package network

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func nftIn(t *testing.T, ns netns.NsHandle) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatalf("nftables connection in test namespace: %v", err)
	}
	return c
}

func readIPForward(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	var got string
	if err := runInNS(ns, func() error {
		b, err := os.ReadFile(ipForwardPath)
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatalf("read ip_forward in test namespace: %v", err)
	}
	return got
}

type chainSummary struct {
	typ      nftables.ChainType
	hook     nftables.ChainHook
	priority nftables.ChainPriority
	policy   nftables.ChainPolicy
	rules    [][]expr.Any
}

func natState(t *testing.T, ns netns.NsHandle) (tables []string, chains map[string]chainSummary) {
	t.Helper()
	c := nftIn(t, ns)
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	for _, tb := range ts {
		tables = append(tables, tb.Name)
	}
	slices.Sort(tables)
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatalf("list chains: %v", err)
	}
	chains = map[string]chainSummary{}
	for _, ch := range all {
		if ch.Table.Name != NATTable {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatalf("list rules of %s: %v", ch.Name, err)
		}
		s := chainSummary{typ: ch.Type}
		if ch.Hooknum != nil {
			s.hook = *ch.Hooknum
		}
		if ch.Priority != nil {
			s.priority = *ch.Priority
		}
		if ch.Policy != nil {
			s.policy = *ch.Policy
		}
		for _, r := range rules {
			s.rules = append(s.rules, r.Exprs)
		}
		chains[ch.Name] = s
	}
	return tables, chains
}

func hasExpr[T expr.Any](exprs []expr.Any, match func(T) bool) bool {
	for _, e := range exprs {
		if v, ok := e.(T); ok && match(v) {
			return true
		}
	}
	return false
}

func cmpData(data []byte) func(*expr.Cmp) bool {
	return func(c *expr.Cmp) bool { return bytes.Equal(c.Data, data) }
}

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func TestEnsureNAT(t *testing.T) {
	h, _, ns := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	// Someone else's table, which banger must leave alone.
	c := nftIn(t, ns)
	other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "other"})
	c.AddChain(&nftables.Chain{Name: "input", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	if err := c.Flush(); err != nil {
		t.Fatalf("create table other: %v", err)
	}
	if got := readIPForward(t, ns); got != "0" {
		t.Fatalf("ip_forward in a fresh namespace = %s, want 0", got)
	}

	for i := range 2 { // idempotent
		if err := h.EnsureNAT(testSubnet, testBridge); err != nil {
			t.Fatalf("EnsureNAT #%d: %v", i+1, err)
		}
	}
	if got := readIPForward(t, ns); got != "1" {
		t.Errorf("ip_forward after EnsureNAT = %s, want 1", got)
	}

	tables, chains := natState(t, ns)
	if !slices.Equal(tables, []string{NATTable, "other"}) {
		t.Errorf("tables = %v, want [%s other]", tables, NATTable)
	}
	post, ok := chains[natPostroutingChain]
	if !ok {
		t.Fatalf("no chain %s in table %s; chains: %v", natPostroutingChain, NATTable, chains)
	}
	if post.typ != nftables.ChainTypeNAT || post.hook != *nftables.ChainHookPostrouting ||
		post.priority != *nftables.ChainPriorityNATSource || post.policy != nftables.ChainPolicyAccept {
		t.Errorf("postrouting chain = %+v, want nat/postrouting/100/accept", post)
	}
	if len(post.rules) != 1 {
		t.Fatalf("postrouting has %d rules after two EnsureNAT calls, want 1", len(post.rules))
	}
	r := post.rules[0]
	if !hasExpr(r, func(*expr.Masq) bool { return true }) ||
		!hasExpr(r, cmpData(testSubnet.Addr().AsSlice())) ||
		!hasExpr(r, func(c *expr.Cmp) bool { return c.Op == expr.CmpOpNeq && bytes.Equal(c.Data, ifnameBytes(testBridge)) }) {
		t.Errorf("postrouting rule = %v, want ip saddr %s oifname != %s masquerade", r, testSubnet, testBridge)
	}
	fwd, ok := chains[natForwardChain]
	if !ok {
		t.Fatalf("no chain %s in table %s", natForwardChain, NATTable)
	}
	if fwd.typ != nftables.ChainTypeFilter || fwd.hook != *nftables.ChainHookForward ||
		fwd.priority != *nftables.ChainPriorityFilter || fwd.policy != nftables.ChainPolicyAccept {
		t.Errorf("forward chain = %+v, want filter/forward/0/accept", fwd)
	}
	if len(fwd.rules) != 2 {
		t.Fatalf("forward has %d rules, want 2", len(fwd.rules))
	}
	if !hasExpr(fwd.rules[1], func(*expr.Ct) bool { return true }) {
		t.Errorf("second forward rule = %v, want a ct state match", fwd.rules[1])
	}

	// The same rules as nft itself prints them, when nft is installed.
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := nsCommand(t, ns, "nft", "list", "table", "ip", NATTable)
		if err != nil {
			t.Fatalf("nft list table: %v: %s", err, out)
		}
		for _, want := range []string{
			"type nat hook postrouting priority srcnat; policy accept;",
			`ip saddr 172.30.0.0/24 oifname != "` + testBridge + `" masquerade`,
			"type filter hook forward priority filter; policy accept;",
			`iifname "` + testBridge + `" accept`,
			`oifname "` + testBridge + `" ct state established,related accept`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("nft list table ip %s lacks %q:\n%s", NATTable, want, out)
			}
		}
	} else {
		t.Log("nft not installed: checked the rules through the library only")
	}

	// A new subnet replaces the rules rather than adding to them.
	other2 := netip.MustParsePrefix("10.213.0.0/24")
	if err := h.EnsureNAT(other2, testBridge); err != nil {
		t.Fatalf("EnsureNAT with another subnet: %v", err)
	}
	_, chains = natState(t, ns)
	if rules := chains[natPostroutingChain].rules; len(rules) != 1 || !hasExpr(rules[0], cmpData(other2.Addr().AsSlice())) {
		t.Errorf("after a subnet change postrouting rules = %v, want one rule for %s", rules, other2)
	}

	for i := range 2 { // nil when already absent
		if err := h.RemoveNAT(); err != nil {
			t.Fatalf("RemoveNAT #%d: %v", i+1, err)
		}
	}
	if tables, _ := natState(t, ns); !slices.Equal(tables, []string{"other"}) {
		t.Errorf("tables after RemoveNAT = %v, want [other]", tables)
	}
}

func TestEnsureNATRejects(t *testing.T) {
	h, _, ns := testHost(t)
	for _, tt := range []struct {
		subnet netip.Prefix
		bridge string
	}{
		{netip.MustParsePrefix("fd00::/64"), testBridge},
		{netip.MustParsePrefix("10.0.0.0/31"), testBridge},
		{testSubnet, ""},
		{testSubnet, "much-too-long-bridge"},
	} {
		if err := h.EnsureNAT(tt.subnet, tt.bridge); err == nil {
			t.Errorf("EnsureNAT(%s, %q) succeeded, want an error", tt.subnet, tt.bridge)
		}
	}
	if tables, _ := natState(t, ns); len(tables) != 0 {
		t.Errorf("rejected EnsureNAT calls left tables %v", tables)
	}
}

// TestNATEndToEnd checks that a guest behind the bridge reaches an upstream
// host through the masquerade, with three namespaces made by the test:
//
//	guest (10.213.0.2) --veth-- [bridge] host [veth] --198.51.100.1-- upstream (198.51.100.2)
//
// The upstream namespace has no route back to the guest subnet, so the
// reply arrives only if the source was rewritten to the host's address. A
// veth stands in for the TAP, which would need a VMM to carry traffic. All
// traffic stays inside these namespaces.
func TestNATEndToEnd(t *testing.T) {
	h, nl, _ := testHost(t)
	guestNS, upNS := newNetNS(t), newNetNS(t)
	subnet := netip.MustParsePrefix("10.213.0.0/24")

	if err := h.EnsureBridge(testBridge, GatewayPrefix(subnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if err := h.EnsureNAT(subnet, testBridge); err != nil {
		t.Fatalf("EnsureNAT: %v", err)
	}

	// Wire the veth pairs: host side stays, peer side moves out.
	wire := func(name, peer string, peerNS netns.NsHandle) netlink.Link {
		addVeth(t, nl, name, peer)
		if err := nl.LinkSetNsFd(mustLink(t, nl, peer), int(peerNS)); err != nil {
			t.Fatalf("move %s: %v", peer, err)
		}
		l := mustLink(t, nl, name)
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	guestPort := wire(testLinkPrefix+"-g0", testLinkPrefix+"-g1", guestNS)
	if err := nl.LinkSetMaster(guestPort, mustLink(t, nl, testBridge)); err != nil {
		t.Fatalf("enslave guest veth: %v", err)
	}
	upPort := wire(testLinkPrefix+"-u0", testLinkPrefix+"-u1", upNS)
	if err := nl.AddrAdd(upPort, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.1/24"))}); err != nil {
		t.Fatal(err)
	}

	guestIP, err := AllocateIP(subnet, nil)
	if err != nil {
		t.Fatal(err)
	}
	configure := func(ns netns.NsHandle, dev string, addr netip.Prefix, gw netip.Addr) {
		t.Helper()
		hn, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		defer hn.Close()
		l := mustLink(t, hn, dev)
		if err := hn.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
			t.Fatal(err)
		}
		if err := hn.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if gw.IsValid() {
			if err := hn.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
				t.Fatalf("default route via %s: %v", gw, err)
			}
		}
	}
	configure(guestNS, testLinkPrefix+"-g1", netip.PrefixFrom(guestIP, subnet.Bits()), Gateway(subnet))
	configure(upNS, testLinkPrefix+"-u1", netip.MustParsePrefix("198.51.100.2/24"), netip.Addr{})

	// Sockets live in the namespace they were created in.
	var server, client *net.UDPConn
	if err := runInNS(upNS, func() (err error) {
		server, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 40000})
		return err
	}); err != nil {
		t.Fatalf("listen upstream: %v", err)
	}
	defer server.Close()
	if err := runInNS(guestNS, func() (err error) {
		client, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 40000})
		return err
	}); err != nil {
		t.Fatalf("dial from guest: %v", err)
	}
	defer client.Close()

	// The first datagrams can be lost while ARP resolves; retry a few
	// times, bounded.
	buf := make([]byte, 64)
	var from *net.UDPAddr
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatal("no datagram from the guest reached the upstream namespace")
		}
		if _, err := client.Write([]byte("ping")); err != nil {
			t.Fatalf("send from guest: %v", err)
		}
		server.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, addr, err := server.ReadFromUDP(buf)
		if err == nil && string(buf[:n]) == "ping" {
			from = addr
			break
		}
	}
	if got := from.AddrPort().Addr().Unmap().String(); got != "198.51.100.1" {
		t.Errorf("upstream saw the guest as %s, want the host's 198.51.100.1 (masquerade)", got)
	}
	if _, err := server.WriteToUDP([]byte("pong"), from); err != nil {
		t.Fatalf("reply from upstream: %v", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := client.Read(buf)
	if err != nil || string(buf[:n]) != "pong" {
		t.Errorf("guest read %q, %v; want the reply through the NAT", buf[:n], err)
	}
}
