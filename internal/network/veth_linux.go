package network

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// CreateVeth creates a veth pair: name in h's namespace, enslaved to bridge
// and up, and peer, with MAC peerMAC, in the network namespace peerNS (for
// example a build sandbox's: /proc/PID/ns/net), down and without address:
// what is inside configures it. The bridge must exist. On any error nothing
// is left behind. When peerNS ends, the pair goes with it.
//
// Guard the bridge port (GuardPort with name, peerMAC and the peer's
// address) before anything behind the peer sends.
func (h *Host) CreateVeth(name, bridge, peer string, peerNS netns.NsHandle, peerMAC net.HardwareAddr) (err error) {
	for _, n := range []string{name, peer} {
		if err := checkLinkName(n); err != nil {
			return fmt.Errorf("create veth: %w", err)
		}
	}
	br, err := h.linkByName(bridge)
	if err != nil {
		return fmt.Errorf("create veth %q: look up bridge %q: %w", name, bridge, err)
	}
	if br == nil {
		return fmt.Errorf("create veth %q: bridge %q does not exist", name, bridge)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("create veth %q: %w", name, notBridgeError(bridge, br))
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: name},
		PeerName:         peer,
		PeerHardwareAddr: peerMAC,
		PeerNamespace:    netlink.NsFd(int(peerNS)),
	}
	if err := h.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %q: %w", name, privileged(err))
	}
	defer func() {
		if err != nil {
			if derr := h.deleteLink(name); derr != nil {
				err = errors.Join(err, fmt.Errorf("remove half-configured veth %q: %w", name, derr))
			}
		}
	}()
	link, err := h.linkByName(name)
	if err != nil || link == nil {
		return fmt.Errorf("create veth %q: it vanished right after creation (%v)", name, err)
	}
	if err := h.nl.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("create veth %q: attach to bridge %q: %w", name, bridge, privileged(err))
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("create veth %q: set up: %w", name, privileged(err))
	}
	return nil
}

// CreateVeth is New().CreateVeth(...) for the process's own namespace.
func CreateVeth(name, bridge, peer string, peerNS netns.NsHandle, peerMAC net.HardwareAddr) error {
	return withHost(func(h *Host) error { return h.CreateVeth(name, bridge, peer, peerNS, peerMAC) })
}
