package network

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/bangerhq/banger/internal/testhost"
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
	if err := testhost.InNetns(ns, func() error {
		b, err := os.ReadFile(ipForwardPath)
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatalf("read ip_forward in test namespace: %v", err)
	}
	return got
}

// setIPForward sets net.ipv4.ip_forward in ns. A new namespace inherits
// the value of the host's, so tests that care set it first.
func setIPForward(t *testing.T, ns netns.NsHandle, v string) {
	t.Helper()
	if err := testhost.InNetns(ns, func() error { return os.WriteFile(ipForwardPath, []byte(v+"\n"), 0o644) }); err != nil {
		t.Fatalf("set ip_forward in test namespace: %v", err)
	}
}

// tableNames returns "family name" for every nftables table in ns.
func tableNames(t *testing.T, ns netns.NsHandle) []string {
	t.Helper()
	ts, err := nftIn(t, ns).ListTables()
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, familyName(tb.Family)+" "+tb.Name)
	}
	slices.Sort(out)
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint("family-", int(f))
}

// nftTable returns `nft list table FAMILY NAME` in ns as trimmed, non-empty
// lines: the rules as nft itself reads them back from the kernel.
func nftTable(t *testing.T, ns netns.NsHandle, family, name string) []string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		testhost.Skip(t, "nft (package nftables) is not installed; the policy tests read the rules back with it")
	}
	out, err := nsCommand(t, ns, "nft", "list", "table", family, name)
	if err != nil {
		t.Fatalf("nft list table %s %s: %v: %s", family, name, err, out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// wantLines compares got with want (one string of lines) and reports the
// difference readably.
func wantLines(t *testing.T, what string, got []string, want string) {
	t.Helper()
	var w []string
	for _, l := range strings.Split(want, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			w = append(w, l)
		}
	}
	if !slices.Equal(got, w) {
		t.Errorf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(w, "\n  "))
	}
}

const (
	// The ip table's chains under the default policy for testBridge and
	// testSubnet; the variants below change only the lines they name.
	wantPostrouting = `table ip banger-bgrt-br0 {
		chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.30.0.0/24 oifname != "bgrt-br0" masquerade
		}`
	wantInputHead = `chain input {
		type filter hook input priority filter; policy accept;
		iifname "bgrt-br0" ip daddr 169.254.0.0/16 drop
		iifname "bgrt-br0" ct state established,related accept
		iifname "bgrt-br0" ip daddr 172.30.0.1 udp dport 53 accept
		iifname "bgrt-br0" ip daddr 172.30.0.1 tcp dport 53 accept`
	wantInputTail = `iifname "bgrt-br0" drop
		}`
	wantForwardHead = `chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "bgrt-br0" ip daddr 169.254.0.0/16 drop`
	wantForwardTail = `iifname "bgrt-br0" accept
		oifname "bgrt-br0" ct state established,related accept
		}
		}`
	wantIsolateRouted = `iifname "bgrt-br0" oifname "bgrt-br0" drop`
	wantDenyPrivate   = `iifname "bgrt-br0" ip daddr != 172.30.0.0/24 ip daddr 10.0.0.0/8 drop
		iifname "bgrt-br0" ip daddr != 172.30.0.0/24 ip daddr 172.16.0.0/12 drop
		iifname "bgrt-br0" ip daddr != 172.30.0.0/24 ip daddr 192.168.0.0/16 drop
		iifname "bgrt-br0" ip daddr != 172.30.0.0/24 ip daddr 100.64.0.0/10 drop`
)

// TestEnsurePolicy checks the rules each configuration installs, as nft
// reads them back, and that EnsurePolicy replaces them (idempotent, no
// leftovers), enables forwarding and touches no other table.
func TestEnsurePolicy(t *testing.T) {
	h, nl, ns := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	// Someone else's table, which banger must leave alone, and the table
	// of an earlier banger, which it must remove.
	c := nftIn(t, ns)
	other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "other"})
	c.AddChain(&nftables.Chain{Name: "input", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: legacyNATTable})
	if err := c.Flush(); err != nil {
		t.Fatalf("create tables: %v", err)
	}
	// A new namespace inherits the host's ip_forward; start from 0 so the
	// test sees EnsurePolicy turn it on, whatever the host has.
	setIPForward(t, ns, "0")

	addVeth(t, nl, testLinkPrefix+"-p0", testLinkPrefix+"-p1")
	port, err := ParsePort(testLinkPrefix+"-p0", "52:54:00:00:00:02", "172.30.0.2")
	if err != nil {
		t.Fatalf("ParsePort: %v", err)
	}
	missing, err := ParsePort(testLinkPrefix+"-gone", "52:54:00:00:00:03", "172.30.0.3")
	if err != nil {
		t.Fatalf("ParsePort: %v", err)
	}
	base := Policy{Bridge: testBridge, Subnet: testSubnet}
	for _, tt := range []struct {
		name     string
		policy   func(Policy) Policy
		input    string // between wantInputHead and wantInputTail
		forward  string // between wantForwardHead and wantForwardTail
		isolated bool
	}{
		{name: "default", policy: func(p Policy) Policy { return p }},
		{name: "host ports",
			policy: func(p Policy) Policy { p.HostTCPPorts = []uint16{22, 8080}; p.HostUDPPorts = []uint16{5353}; return p },
			input: `iifname "bgrt-br0" tcp dport 22 accept
				iifname "bgrt-br0" tcp dport 8080 accept
				iifname "bgrt-br0" udp dport 5353 accept`},
		{name: "isolate vms", policy: func(p Policy) Policy { p.IsolateVMs = true; return p },
			forward: wantIsolateRouted, isolated: true},
		{name: "no private", policy: func(p Policy) Policy { p.DenyPrivate = true; return p }, forward: wantDenyPrivate},
		{name: "all", policy: func(p Policy) Policy {
			p.HostTCPPorts = []uint16{22}
			p.IsolateVMs, p.DenyPrivate = true, true
			return p
		}, input: `iifname "bgrt-br0" tcp dport 22 accept`, forward: wantIsolateRouted + "\n" + wantDenyPrivate, isolated: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 2 { // idempotent
				if err := h.EnsurePolicy(tt.policy(base), []Port{port, missing}); err != nil {
					t.Fatalf("EnsurePolicy #%d: %v", i+1, err)
				}
			}
			name := TableName(testBridge)
			if got, want := tableNames(t, ns), []string{"bridge " + name, "ip " + name, "ip other", "netdev " + name}; !slices.Equal(got, want) {
				t.Errorf("tables = %v, want %v", got, want)
			}
			wantLines(t, "table ip "+name, nftTable(t, ns, "ip", name), strings.Join([]string{
				wantPostrouting, wantInputHead, tt.input, wantInputTail, wantForwardHead, tt.forward, wantForwardTail}, "\n"))
			isolate := ""
			if tt.isolated {
				isolate = "iifname @ports drop"
			}
			// The port whose device is missing is left out.
			wantLines(t, "table bridge "+name, nftTable(t, ns, "bridge", name), `table bridge banger-bgrt-br0 {
				set ports {
				type ifname
				elements = { "bgrt-p0" }
				}
				chain forward {
				type filter hook forward priority filter; policy accept;
				`+isolate+`
				}
				}`)
			wantLines(t, "table netdev "+name, nftTable(t, ns, "netdev", name), `table netdev banger-bgrt-br0 {
				chain port-bgrt-p0 {
				type filter hook ingress device "bgrt-p0" priority filter; policy drop;
				ether saddr 52:54:00:00:00:02 ip saddr 172.30.0.2 accept
				ether saddr 52:54:00:00:00:02 arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 52:54:00:00:00:02 arp saddr ip 172.30.0.2 accept
				}
				}`)
			if got := readIPForward(t, ns); got != "1" {
				t.Errorf("ip_forward after EnsurePolicy = %s, want 1", got)
			}
		})
	}

	// Without the port in the list, its guard goes: what a daemon start
	// does for a VM that died while the daemon was down.
	if err := h.EnsurePolicy(base, nil); err != nil {
		t.Fatalf("EnsurePolicy without ports: %v", err)
	}
	if got := nftTable(t, ns, "netdev", TableName(testBridge)); len(got) != 2 {
		t.Errorf("netdev table after EnsurePolicy without ports = %q, want it empty", got)
	}

	for i := range 2 { // nil when already absent
		if err := h.RemovePolicy(testBridge); err != nil {
			t.Fatalf("RemovePolicy #%d: %v", i+1, err)
		}
	}
	if got := tableNames(t, ns); !slices.Equal(got, []string{"ip other"}) {
		t.Errorf("tables after RemovePolicy = %v, want [ip other]", got)
	}
}

// TestGuardPort checks that guarding and unguarding a port are element and
// chain changes of their own that leave the other ports alone.
func TestGuardPort(t *testing.T) {
	h, nl, ns := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	policy := Policy{Bridge: testBridge, Subnet: testSubnet, IsolateVMs: true}
	addVeth(t, nl, testLinkPrefix+"-a0", testLinkPrefix+"-a1")
	addVeth(t, nl, testLinkPrefix+"-b0", testLinkPrefix+"-b1")
	a, _ := ParsePort(testLinkPrefix+"-a0", "52:54:00:00:00:0a", "172.30.0.10")
	b, _ := ParsePort(testLinkPrefix+"-b0", "52:54:00:00:00:0b", "172.30.0.11")
	if err := h.EnsurePolicy(policy, []Port{a}); err != nil {
		t.Fatalf("EnsurePolicy: %v", err)
	}
	name := TableName(testBridge)
	before := nftTable(t, ns, "netdev", name)

	for i := range 2 { // idempotent
		if err := h.GuardPort(testBridge, b); err != nil {
			t.Fatalf("GuardPort #%d: %v", i+1, err)
		}
	}
	// A new lease for the same device replaces the old guard.
	b2, _ := ParsePort(b.Name, "52:54:00:00:00:0c", "172.30.0.12")
	if err := h.GuardPort(testBridge, b2); err != nil {
		t.Fatalf("GuardPort with a new address: %v", err)
	}
	// Building the whole policy with both ports gives the same rules.
	if err := h.GuardPort(testBridge, a); err != nil {
		t.Fatalf("GuardPort of a port EnsurePolicy guarded: %v", err)
	}
	guarded := nftTable(t, ns, "netdev", name)
	guardedSet := nftTable(t, ns, "bridge", name)
	if err := h.EnsurePolicy(policy, []Port{a, b2}); err != nil {
		t.Fatalf("EnsurePolicy: %v", err)
	}
	wantLines(t, "netdev table after GuardPort vs EnsurePolicy", guarded, strings.Join(nftTable(t, ns, "netdev", name), "\n"))
	wantLines(t, "bridge table after GuardPort vs EnsurePolicy", guardedSet, strings.Join(nftTable(t, ns, "bridge", name), "\n"))
	joined := strings.Join(guarded, "\n")
	if strings.Contains(joined, "52:54:00:00:00:0b") || !strings.Contains(joined, "ip saddr 172.30.0.12") {
		t.Errorf("after re-guarding %s with a new lease:\n%s", b.Name, joined)
	}

	for i := range 2 { // nil when already unguarded
		if err := h.UnguardPort(testBridge, b.Name); err != nil {
			t.Fatalf("UnguardPort #%d: %v", i+1, err)
		}
	}
	wantLines(t, "netdev table after UnguardPort", nftTable(t, ns, "netdev", name), strings.Join(before, "\n"))
	if set := strings.Join(nftTable(t, ns, "bridge", name), "\n"); strings.Contains(set, b.Name) || !strings.Contains(set, a.Name) {
		t.Errorf("ports set after UnguardPort(%s):\n%s", b.Name, set)
	}

	// Unguarding works after the device is gone, and with no tables at all.
	if err := nl.LinkDel(mustLink(t, nl, a.Name)); err != nil {
		t.Fatal(err)
	}
	if err := h.UnguardPort(testBridge, a.Name); err != nil {
		t.Fatalf("UnguardPort of a deleted device: %v", err)
	}
	if got := nftTable(t, ns, "netdev", name); len(got) != 2 {
		t.Errorf("netdev table after unguarding every port = %q, want it empty", got)
	}
	if err := h.RemovePolicy(testBridge); err != nil {
		t.Fatal(err)
	}
	if err := h.UnguardPort(testBridge, b.Name); err != nil {
		t.Errorf("UnguardPort without tables: %v", err)
	}
	if got := tableNames(t, ns); len(got) != 0 {
		t.Errorf("UnguardPort without tables created %v", got)
	}
}

func TestPolicyRejects(t *testing.T) {
	h, nl, ns := testHost(t)
	addVeth(t, nl, testLinkPrefix+"-p0", testLinkPrefix+"-p1")
	good, _ := ParsePort(testLinkPrefix+"-p0", "52:54:00:00:00:02", "172.30.0.2")
	base := Policy{Bridge: testBridge, Subnet: testSubnet}
	for _, tt := range []struct {
		name   string
		policy Policy
		ports  []Port
	}{
		{"IPv6 subnet", Policy{Bridge: testBridge, Subnet: netip.MustParsePrefix("fd00::/64")}, nil},
		{"tiny subnet", Policy{Bridge: testBridge, Subnet: netip.MustParsePrefix("10.0.0.0/31")}, nil},
		{"no bridge", Policy{Subnet: testSubnet}, nil},
		{"long bridge", Policy{Bridge: "much-too-long-bridge", Subnet: testSubnet}, nil},
		{"port 0", Policy{Bridge: testBridge, Subnet: testSubnet, HostUDPPorts: []uint16{0}}, nil},
		{"port without MAC", base, []Port{{Name: good.Name, IP: good.IP}}},
		{"port with IPv6", base, []Port{{Name: good.Name, MAC: good.MAC, IP: netip.MustParseAddr("fd00::2")}}},
	} {
		if err := h.EnsurePolicy(tt.policy, tt.ports); err == nil {
			t.Errorf("EnsurePolicy(%s) succeeded, want an error", tt.name)
		}
	}
	if err := h.GuardPort(testBridge, Port{Name: testLinkPrefix + "-none", MAC: good.MAC, IP: good.IP}); err == nil ||
		!strings.Contains(err.Error(), "no such network device") {
		t.Errorf("GuardPort of a missing device: %v, want 'no such network device'", err)
	}
	if err := h.GuardPort(testBridge, Port{Name: good.Name, MAC: good.MAC}); err == nil {
		t.Errorf("GuardPort without an IP succeeded")
	}
	if got := tableNames(t, ns); len(got) != 0 {
		t.Errorf("rejected calls left tables %v", got)
	}

	for _, tt := range []struct{ name, mac, ip, want string }{
		{"bgrt-x", "01:00:5e:00:00:01", "10.0.0.2", "unicast"},
		{"bgrt-x", "52:54:00:00:00:02", "10.0.0", "IP address"},
		{"bgrt-x", "52:54:00:00:00:02", "224.0.0.1", "unicast IPv4"},
		{"", "52:54:00:00:00:02", "10.0.0.2", "empty interface name"},
	} {
		if _, err := ParsePort(tt.name, tt.mac, tt.ip); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePort(%q, %q, %q) = %v, want an error mentioning %q", tt.name, tt.mac, tt.ip, err, tt.want)
		}
	}
	if err := h.RemovePolicy("much-too-long-bridge"); err == nil {
		t.Errorf("RemovePolicy with a bad bridge name: %v, want an error", err)
	}
}
