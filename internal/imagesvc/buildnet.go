package imagesvc

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/store"
)

// buildNet gives a build sandbox its network, for the packages
// customize.sh may install: an address of the VM subnet (a build lease, so
// no VM gets it meanwhile) on a veth whose peer is the sandbox's eth0,
// attached to the bridge and guarded with its MAC and address like a VM's
// TAP, so the guest network policy applies to builds as to guests. It
// returns nil when the daemon cannot manage the bridge (an ordinary user
// without CAP_NET_ADMIN): the build then has no network, which only an
// image missing packages needs. release frees the address and the guard
// (the veth itself goes with the sandbox's network namespace).
func (s *Service) buildNet(ctx context.Context, name string) (*sandbox.Net, func()) {
	nop := func() {}
	if s.cfg.Network == nil {
		return nil, nop
	}
	if err := s.cfg.Network.EnsureBridge(ctx); err != nil {
		s.log.Warn("image build without network: customize.sh cannot install missing packages", "image", name, "err", err)
		return nil, nop
	}
	subnet := s.cfg.Subnet
	var ip netip.Addr
	err := s.store.Tx(ctx, func(tx *sql.Tx) error {
		used, err := store.LeasedAddrs(ctx, tx)
		if err != nil {
			return err
		}
		if ip, err = network.AllocateIP(subnet, used); err != nil {
			return err
		}
		return store.InsertBuildLease(ctx, tx, ip.String(), "build:"+name)
	})
	if err != nil {
		s.log.Warn("image build without network: no address for it", "image", name, "err", err)
		return nil, nop
	}
	mac, err := network.RandomMAC()
	if err != nil {
		store.DeleteBuildLease(context.WithoutCancel(ctx), s.store.DB, ip.String())
		return nil, nop
	}
	var id [4]byte
	rand.Read(id[:])
	veth := "bgb" + hex.EncodeToString(id[:])
	port, err := network.ParsePort(veth, mac, ip.String())
	if err != nil {
		store.DeleteBuildLease(context.WithoutCancel(ctx), s.store.DB, ip.String())
		return nil, nop
	}
	release := func() {
		if err := errors.Join(s.cfg.Network.UnguardPort(veth), network.DeleteLink(veth),
			store.DeleteBuildLease(context.WithoutCancel(ctx), s.store.DB, ip.String())); err != nil {
			s.log.Warn("release a build's network", "image", name, "veth", veth, "err", err)
		}
	}
	return &sandbox.Net{
		Iface: "eth0", Addr: netip.PrefixFrom(ip, subnet.Bits()), Gateway: network.Gateway(subnet),
		Attach: func(pid int) error {
			ns, err := netns.GetFromPid(pid)
			if err != nil {
				return err
			}
			defer ns.Close()
			if err := network.CreateVeth(veth, s.cfg.Bridge, "eth0", ns, port.MAC); err != nil {
				return err
			}
			// The sandbox brings eth0 up only after Attach returns: the
			// guard is in place before anything inside can send.
			return s.cfg.Network.GuardPort(port)
		},
	}, release
}

// buildDNS is the name server a build's package manager is given:
// network.dns when set, else the host's first IPv4 name server that another
// network namespace can reach. A resolver on loopback (systemd-resolved's
// 127.0.0.53) cannot be; its upstream servers are read from
// /run/systemd/resolve/resolv.conf then. "" when there is none.
func buildDNS(configured string) string {
	if configured != "" {
		return configured
	}
	return reachableNameserver("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
}

// reachableNameserver is the first IPv4, non-loopback nameserver of the
// resolv.conf files, or "".
func reachableNameserver(files ...string) string {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			fields := strings.Fields(l)
			if len(fields) < 2 || fields[0] != "nameserver" {
				continue
			}
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.Is4() && !a.IsLoopback() && !a.IsUnspecified() {
				return a.String()
			}
		}
	}
	return ""
}
