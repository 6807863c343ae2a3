package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

const (
	testBridge = testLinkPrefix + "-br0"
	testTAP    = testLinkPrefix + "-tap0"
	testUID    = 1000
	testGID    = 1000
)

var testSubnet = netip.MustParsePrefix("172.30.0.0/24")

// addVeth creates a veth pair in the namespace of nl (a stand-in for a
// device banger does not own).
func addVeth(t *testing.T, nl *netlink.Handle, name, peer string) {
	t.Helper()
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
}

func mustLink(t *testing.T, nl *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %q: %v", name, err)
	}
	return l
}

func linkAddrs(t *testing.T, nl *netlink.Handle, l netlink.Link) []string {
	t.Helper()
	addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list addresses of %s: %v", l.Attrs().Name, err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

func TestHostPrefixesCurrentNamespace(t *testing.T) {
	// Read-only, so it may look at the real host, and needs no privilege.
	ps, err := HostPrefixes()
	if err != nil {
		t.Fatalf("HostPrefixes: %v", err)
	}
	for _, p := range ps {
		if !p.Addr().Is4() || p.Bits() < 2 || p != p.Masked() {
			t.Errorf("HostPrefixes returned %s: want masked IPv4 prefixes longer than /1", p)
		}
	}
}

func TestHostPrefixes(t *testing.T) {
	h, nl, _ := testHost(t)
	addVeth(t, nl, testLinkPrefix+"-up0", testLinkPrefix+"-up1")
	up := mustLink(t, nl, testLinkPrefix+"-up0")
	if err := nl.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.51.100.2/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(up); err != nil {
		t.Fatal(err)
	}
	gw := net.ParseIP("198.51.100.1")
	routes := []*netlink.Route{
		{LinkIndex: up.Attrs().Index, Gw: gw},                                                                       // default
		{LinkIndex: up.Attrs().Index, Gw: gw, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/1"))},                       // VPN-style half default
		{LinkIndex: up.Attrs().Index, Gw: gw, Dst: ipNet(netip.MustParsePrefix("203.0.113.0/24")), Table: 100},      // policy routing table
		{LinkIndex: up.Attrs().Index, Gw: gw, Dst: ipNet(netip.MustParsePrefix("172.30.0.128/25")), Table: 0},       // collides with the first candidate
		{LinkIndex: up.Attrs().Index, Type: unix.RTN_BLACKHOLE, Dst: ipNet(netip.MustParsePrefix("10.213.0.0/16"))}, // a blackhole is in use too
	}
	for _, r := range routes {
		if r.Type == unix.RTN_BLACKHOLE {
			r.LinkIndex = 0
		}
		if err := nl.RouteAdd(r); err != nil {
			t.Fatalf("add route %v: %v", r, err)
		}
	}

	got, err := h.HostPrefixes()
	if err != nil {
		t.Fatalf("HostPrefixes: %v", err)
	}
	for _, want := range prefixes("198.51.100.0/24", "198.51.100.2/32", "203.0.113.0/24", "172.30.0.128/25", "10.213.0.0/16") {
		if !slices.Contains(got, want) {
			t.Errorf("HostPrefixes = %v, missing %s", got, want)
		}
	}
	for _, p := range got {
		if p.Bits() <= 1 {
			t.Errorf("HostPrefixes = %v, contains default-like route %s", got, p)
		}
	}
	if !slices.IsSortedFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }) {
		t.Errorf("HostPrefixes = %v, not sorted", got)
	}
	subnet, err := ChooseSubnet(got, DefaultCandidates())
	if err != nil {
		t.Fatalf("ChooseSubnet: %v", err)
	}
	if subnet.String() != "172.31.0.0/24" {
		t.Errorf("ChooseSubnet(HostPrefixes()) = %s, want 172.31.0.0/24", subnet)
	}

	// Once banger's bridge holds a subnet, HostPrefixes reports it and
	// BridgeSubnet is how the daemon keeps it.
	if err := h.EnsureBridge(testBridge, GatewayPrefix(subnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	got, err = h.HostPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, subnet) {
		t.Errorf("HostPrefixes = %v, missing the bridge's %s", got, subnet)
	}
	bs, ok, err := h.BridgeSubnet(testBridge)
	if err != nil || !ok || bs != subnet {
		t.Errorf("BridgeSubnet = %s, %v, %v; want %s, true, nil", bs, ok, err, subnet)
	}
	if _, ok, err := h.BridgeSubnet(testLinkPrefix + "-none"); ok || err != nil {
		t.Errorf("BridgeSubnet(missing) = %v, %v; want false, nil", ok, err)
	}
	if _, _, err := h.BridgeSubnet(testLinkPrefix + "-up0"); !errors.Is(err, ErrNotBridge) {
		t.Errorf("BridgeSubnet(veth) error = %v, want ErrNotBridge", err)
	}
}

func TestEnsureBridge(t *testing.T) {
	h, nl, _ := testHost(t)
	gw := GatewayPrefix(testSubnet)
	for i := range 2 { // idempotent
		if err := h.EnsureBridge(testBridge, gw); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
	}
	br := mustLink(t, nl, testBridge)
	if br.Type() != "bridge" {
		t.Errorf("%s is a %s, want bridge", testBridge, br.Type())
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s is not up", testBridge)
	}
	if got := linkAddrs(t, nl, br); !slices.Equal(got, []string{"172.30.0.1/24"}) {
		t.Errorf("%s addresses = %v, want exactly [172.30.0.1/24]", testBridge, got)
	}
	if ok, err := h.LinkExists(testBridge); !ok || err != nil {
		t.Errorf("LinkExists(bridge) = %v, %v; want true, nil", ok, err)
	}

	// A second subnet is added next to the first, not instead of it.
	if err := h.EnsureBridge(testBridge, netip.MustParsePrefix("172.31.0.1/24")); err != nil {
		t.Fatalf("EnsureBridge with another gateway: %v", err)
	}
	if got := linkAddrs(t, nl, br); len(got) != 2 {
		t.Errorf("%s addresses = %v, want both gateways", testBridge, got)
	}

	// An address taken away is put back.
	if err := nl.AddrDel(br, &netlink.Addr{IPNet: ipNet(gw)}); err != nil {
		t.Fatal(err)
	}
	if err := h.EnsureBridge(testBridge, gw); err != nil {
		t.Fatalf("EnsureBridge after address removal: %v", err)
	}
	if got := linkAddrs(t, nl, br); !slices.Contains(got, "172.30.0.1/24") {
		t.Errorf("%s addresses = %v, want 172.30.0.1/24 restored", testBridge, got)
	}

	if err := h.RemoveBridge(testBridge); err != nil {
		t.Fatalf("RemoveBridge: %v", err)
	}
	if ok, err := h.LinkExists(testBridge); ok || err != nil {
		t.Errorf("LinkExists after RemoveBridge = %v, %v; want false, nil", ok, err)
	}
	if err := h.RemoveBridge(testBridge); err != nil {
		t.Errorf("RemoveBridge of a missing bridge: %v, want nil", err)
	}
}

func TestEnsureBridgeRejects(t *testing.T) {
	h, nl, _ := testHost(t)
	veth := testLinkPrefix + "-v0"
	addVeth(t, nl, veth, testLinkPrefix+"-v1")

	err := h.EnsureBridge(veth, GatewayPrefix(testSubnet))
	if !errors.Is(err, ErrNotBridge) || !strings.Contains(err.Error(), "network.bridge") {
		t.Errorf("EnsureBridge over a veth: %v, want ErrNotBridge telling how to fix it", err)
	}
	if err := h.RemoveBridge(veth); !errors.Is(err, ErrNotBridge) {
		t.Errorf("RemoveBridge of a veth: %v, want ErrNotBridge", err)
	}
	if ok, _ := h.LinkExists(veth); !ok {
		t.Errorf("RemoveBridge deleted a veth")
	}
	for _, gw := range []string{"172.30.0.0/24", "172.30.0.255/24", "172.30.0.1/31", "fd00::1/64"} {
		if err := h.EnsureBridge(testBridge, netip.MustParsePrefix(gw)); err == nil {
			t.Errorf("EnsureBridge with gateway %s succeeded, want an error", gw)
		}
	}
	for _, name := range []string{"", "much-too-long-name", "a/b"} {
		if err := h.EnsureBridge(name, GatewayPrefix(testSubnet)); err == nil {
			t.Errorf("EnsureBridge(%q) succeeded, want an error", name)
		}
	}
	if ok, _ := h.LinkExists(testBridge); ok {
		t.Errorf("a rejected EnsureBridge left %s behind", testBridge)
	}

	// A subnet another link holds (a bridge left by another daemon, a VPN)
	// is refused, naming that link, and leaves no bridge.
	other := testLinkPrefix + "-other"
	if err := h.EnsureBridge(other, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge(%s): %v", other, err)
	}
	overlapping := netip.MustParsePrefix(testSubnet.Addr().String() + "/16").Masked()
	for _, subnet := range []netip.Prefix{testSubnet, overlapping} {
		err := h.EnsureBridge(testBridge, GatewayPrefix(subnet))
		if err == nil || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "network.subnet") {
			t.Errorf("EnsureBridge with subnet %s that %s holds: %v, want an error naming it and network.subnet", subnet, other, err)
		}
		if ok, _ := h.LinkExists(testBridge); ok {
			t.Errorf("a refused EnsureBridge (subnet %s taken) left %s behind", subnet, testBridge)
		}
	}
	// The bridge that holds it is ensured again without complaint.
	if err := h.EnsureBridge(other, GatewayPrefix(testSubnet)); err != nil {
		t.Errorf("EnsureBridge of the bridge that holds the subnet: %v", err)
	}
}

func TestCreateTAP(t *testing.T) {
	h, nl, ns := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if err := h.CreateTAP(testTAP, testBridge, testUID, testGID); err != nil {
		t.Fatalf("CreateTAP: %v", err)
	}
	br := mustLink(t, nl, testBridge)
	checkTAP := func() netlink.Link {
		t.Helper()
		l := mustLink(t, nl, testTAP)
		tap, ok := l.(*netlink.Tuntap)
		if !ok {
			t.Fatalf("%s is a %s, want tuntap", testTAP, l.Type())
		}
		if tap.Mode != netlink.TUNTAP_MODE_TAP {
			t.Errorf("mode = %v, want tap", tap.Mode)
		}
		if tap.NonPersist {
			t.Error("TAP is not persistent")
		}
		if tap.Flags&netlink.TUNTAP_NO_PI == 0 || tap.Flags&netlink.TUNTAP_VNET_HDR == 0 {
			t.Errorf("flags = %v, want NO_PI and VNET_HDR", tap.Flags)
		}
		if tap.Owner != testUID || tap.Group != testGID {
			t.Errorf("netlink owner = %d:%d, want %d:%d", tap.Owner, tap.Group, testUID, testGID)
		}
		if tap.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("master index = %d, want the bridge's %d", tap.Attrs().MasterIndex, br.Attrs().Index)
		}
		if tap.Attrs().Flags&net.FlagUp == 0 {
			t.Error("TAP is not up")
		}
		return l
	}
	first := checkTAP()
	if got := sysfsAttr(t, ns, testTAP, "owner"); got != "1000" {
		t.Errorf("/sys/class/net/%s/owner = %q, want 1000", testTAP, got)
	}
	if got := sysfsAttr(t, ns, testTAP, "group"); got != "1000" {
		t.Errorf("/sys/class/net/%s/group = %q, want 1000", testTAP, got)
	}
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR plus IFF_PERSIST.
	if got := sysfsAttr(t, ns, testTAP, "tun_flags"); got != "0x5802" {
		t.Errorf("/sys/class/net/%s/tun_flags = %s, want 0x5802", testTAP, got)
	}

	// The owner can attach to the device without any privilege, which is
	// what lets the VMM run as the user; anyone else cannot.
	tun := testhost.DevTUN(t)
	if err := openTAPAs(ns, tun, testTAP, testUID, testGID); err != nil {
		t.Errorf("uid %d could not open its TAP: %v", testUID, err)
	}
	if err := openTAPAs(ns, tun, testTAP, testUID+1, testGID+1); !errors.Is(err, unix.EPERM) {
		t.Errorf("uid %d opening another user's TAP: %v, want EPERM", testUID+1, err)
	}

	// A stale TAP (here: left by the first call) is replaced by a fresh
	// device.
	if err := h.CreateTAP(testTAP, testBridge, testUID, testGID); err != nil {
		t.Fatalf("CreateTAP over a stale TAP: %v", err)
	}
	second := checkTAP()
	if second.Attrs().Index == first.Attrs().Index {
		t.Error("CreateTAP reused the stale device instead of recreating it")
	}

	if err := h.DeleteLink(testTAP); err != nil {
		t.Fatalf("DeleteLink: %v", err)
	}
	if ok, err := h.LinkExists(testTAP); ok || err != nil {
		t.Errorf("LinkExists after DeleteLink = %v, %v; want false, nil", ok, err)
	}
	if err := h.DeleteLink(testTAP); err != nil {
		t.Errorf("DeleteLink of a missing link: %v, want nil", err)
	}

	// Negative ids leave the owner unset.
	if err := h.CreateTAP(testTAP, testBridge, -1, -1); err != nil {
		t.Fatalf("CreateTAP without owner: %v", err)
	}
	if got := sysfsAttr(t, ns, testTAP, "owner"); got != "-1" {
		t.Errorf("owner without uid = %q, want -1", got)
	}
}

func TestCreateTAPLeavesNothingOnError(t *testing.T) {
	h, nl, _ := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	veth := testLinkPrefix + "-v0"
	addVeth(t, nl, veth, testLinkPrefix+"-v1")

	tests := []struct {
		name, tap, bridge string
		hook              func(string) error
		wantErr           error
		wantInMsg         string
	}{
		{name: "missing bridge", tap: testTAP, bridge: testLinkPrefix + "-nobr", wantInMsg: "does not exist"},
		{name: "bridge is a veth", tap: testTAP, bridge: veth, wantErr: ErrNotBridge},
		{name: "name too long", tap: "bgr-0123456789ab", bridge: testBridge, wantInMsg: "at most 15"},
		{name: "failure after creation", tap: testTAP, bridge: testBridge,
			hook: func(string) error { return errors.New("injected") }, wantInMsg: "injected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testHookAfterTAP = tt.hook
			t.Cleanup(func() { testHookAfterTAP = nil })
			err := h.CreateTAP(tt.tap, tt.bridge, testUID, testGID)
			if err == nil {
				t.Fatal("CreateTAP succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want one wrapping %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantInMsg)
			}
			if ok, err := h.LinkExists(testTAP); ok || err != nil {
				t.Errorf("after a failed CreateTAP, LinkExists = %v, %v; want false, nil", ok, err)
			}
		})
	}

	// A device of another kind with the TAP's name is not deleted.
	err := h.CreateTAP(veth, testBridge, testUID, testGID)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("CreateTAP over a veth: %v, want an 'already exists' error", err)
	}
	if l := mustLink(t, nl, veth); l.Type() != "veth" {
		t.Errorf("%s became a %s", veth, l.Type())
	}
}

func TestMissingCapabilityError(t *testing.T) {
	ns := testhost.NewNetns(t)
	errc := make(chan error, 1)
	go func() {
		// This thread drops CAP_NET_ADMIN and enters the test namespace;
		// it is never unlocked, so it dies with the goroutine.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		// The package-level function works on the calling thread's
		// namespace, which is the test namespace here.
		errc <- EnsureBridge(testBridge, GatewayPrefix(testSubnet))
	}()
	err := <-errc
	if !errors.Is(err, ErrNeedCapNetAdmin) {
		t.Fatalf("EnsureBridge without CAP_NET_ADMIN: %v, want ErrNeedCapNetAdmin", err)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("error %v does not wrap EPERM", err)
	}
	for _, want := range []string{"CAP_NET_ADMIN", "sudo setcap cap_net_admin+ep $(which bangerd)", testBridge} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// openTAPAs attaches to the TAP device name the way an unprivileged VMM
// does (open the TUN clone device at tun, TUNSETIFF with the device's name), on a thread
// that is inside ns and has dropped root for uid and gid. Only that thread's
// credentials change (raw setresuid/setresgid act per thread), and it is
// never unlocked, so it dies with its goroutine.
func openTAPAs(ns netns.NsHandle, tun, name string, uid, gid int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			errc <- e
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			errc <- e
			return
		}
		fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", tun, err)
			return
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			errc <- err
			return
		}
		ifr.SetUint16(tapFlags)
		errc <- unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}()
	return <-errc
}

// TestForgetNeighbour: the bridge's neighbour entry of an address goes
// (whatever its state), other entries stay, and an absent entry or bridge
// is no error.
func TestForgetNeighbour(t *testing.T) {
	h, nl, _ := testHost(t)
	if err := h.ForgetNeighbour(testBridge, netip.MustParseAddr("172.30.0.2")); err != nil {
		t.Fatalf("ForgetNeighbour without the bridge: %v", err)
	}
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	br := mustLink(t, nl, testBridge)
	old, _ := net.ParseMAC("52:54:00:00:00:02")
	for _, ip := range []string{"172.30.0.2", "172.30.0.3"} {
		n := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_REACHABLE, IP: net.ParseIP(ip), HardwareAddr: old}
		if err := nl.NeighSet(n); err != nil {
			t.Fatal(err)
		}
	}
	have := func() []string {
		t.Helper()
		ns, err := nl.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, n := range ns {
			ips = append(ips, n.IP.String())
		}
		return ips
	}
	if got := have(); len(got) != 2 {
		t.Fatalf("neighbours before: %v", got)
	}
	for range 2 { // the second time, there is nothing to forget
		if err := h.ForgetNeighbour(testBridge, netip.MustParseAddr("172.30.0.2")); err != nil {
			t.Fatalf("ForgetNeighbour: %v", err)
		}
	}
	if got := have(); len(got) != 1 || got[0] != "172.30.0.3" {
		t.Errorf("neighbours after forgetting 172.30.0.2: %v, want 172.30.0.3 only", got)
	}
}
