package network

import (
	"net"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/vishvananda/netlink"
)

func TestCreateVeth(t *testing.T) {
	h, nl, _ := testHost(t)
	peerNS := testhost.NewNetns(t)
	peerNL, err := netlink.NewHandleAt(peerNS)
	if err != nil {
		t.Fatal(err)
	}
	defer peerNL.Close()
	mac, _ := net.ParseMAC("52:54:00:ab:cd:ef")
	const name = testLinkPrefix + "veth0"
	if err := h.CreateVeth(name, testBridge, "eth0", peerNS, mac); err == nil {
		t.Fatal("CreateVeth without the bridge succeeded")
	}
	if _, err := nl.LinkByName(name); err == nil {
		t.Fatal("a failed CreateVeth left its device")
	}
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if err := h.CreateVeth(name, testBridge, "eth0", peerNS, mac); err != nil {
		t.Fatalf("CreateVeth: %v", err)
	}
	br := mustLink(t, nl, testBridge)
	l := mustLink(t, nl, name)
	if l.Type() != "veth" || l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: type %s, master %d (bridge %d), flags %v; want an up veth on the bridge",
			name, l.Type(), l.Attrs().MasterIndex, br.Attrs().Index, l.Attrs().Flags)
	}
	peer, err := peerNL.LinkByName("eth0")
	if err != nil {
		t.Fatalf("the peer is not in its namespace: %v", err)
	}
	if peer.Attrs().HardwareAddr.String() != mac.String() {
		t.Errorf("peer MAC %s, want %s", peer.Attrs().HardwareAddr, mac)
	}
	if _, err := nl.LinkByName("eth0"); err == nil {
		t.Error("the peer is (also) in the host's namespace")
	}
	// The pair goes when the peer's namespace does.
	if err := peerNL.LinkDel(peer); err != nil {
		t.Fatal(err)
	}
	if _, err := nl.LinkByName(name); err == nil {
		t.Error("the host end outlived its peer")
	}
}
