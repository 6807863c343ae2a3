package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/vmm"
)

// hostNet adapts package network to vm.Network for one bridge and subnet.
// It owns the guest network policy of that bridge: it rebuilds the policy
// tables from policy and the ports it guards, so every bridge port guarded
// in this daemon (VM TAPs, and any other device attached to the bridge) is
// guarded through it, never with package network directly.
type hostNet struct {
	policy network.Policy
	log    *slog.Logger

	// onBridge, when set, is called after the bridge was made current
	// (created: it did not exist before), with no lock held: the DNS
	// server for VM names listens on the bridge address.
	onBridge func(created bool)

	mu    sync.Mutex
	ports map[string]network.Port // guarded bridge ports, by device name
}

// guestPolicy is the guest network policy the config asks for (config.Load
// has checked network.host_ports).
func guestPolicy(cfg config.Network, bridge string, subnet netip.Prefix) network.Policy {
	p := network.Policy{Bridge: bridge, Subnet: subnet, IsolateVMs: cfg.IsolateVMs, DenyPrivate: !cfg.AllowPrivate()}
	ports, _ := cfg.GuestHostPorts()
	for _, hp := range ports {
		if hp.Proto == "udp" {
			p.HostUDPPorts = append(p.HostUDPPorts, hp.Port)
		} else {
			p.HostTCPPorts = append(p.HostTCPPorts, hp.Port)
		}
	}
	return p
}

func newHostNet(policy network.Policy, log *slog.Logger) *hostNet {
	return &hostNet{policy: policy, log: log, ports: map[string]network.Port{}}
}

// EnsureBridge makes the bridge, NAT and guest policy current, guarding
// every port recorded so far. It is cheap and idempotent, so it runs before
// every VM start and so repairs rules or a bridge removed by hand.
func (h *hostNet) EnsureBridge(ctx context.Context) error {
	existed, _ := network.LinkExists(h.policy.Bridge)
	h.mu.Lock()
	err := h.ensureLocked()
	h.mu.Unlock()
	if err == nil && h.onBridge != nil {
		h.onBridge(!existed)
	}
	return err
}

func (h *hostNet) ensureLocked() error {
	if err := network.EnsureBridge(h.policy.Bridge, network.GatewayPrefix(h.policy.Subnet)); err != nil {
		return err
	}
	ports := make([]network.Port, 0, len(h.ports))
	for _, p := range h.ports {
		ports = append(ports, p)
	}
	return network.EnsurePolicy(h.policy, ports)
}

// restore runs once at daemon start, after the VMs were re-adopted (see
// AdoptTAP): when the bridge exists it rebuilds the policy, so running VMs
// keep their guard under the current config and the guards of VMs that died
// while no daemon ran are dropped. Without a bridge no VM runs, and nothing
// needs privilege yet.
func (h *hostNet) restore() error {
	if ok, err := network.LinkExists(h.policy.Bridge); err != nil || !ok {
		return err
	}
	h.mu.Lock()
	err := h.ensureLocked()
	guarded := len(h.ports)
	h.mu.Unlock()
	if err != nil {
		return fmt.Errorf("rebuild the guest network policy of bridge %q: %w", h.policy.Bridge, err)
	}
	if h.onBridge != nil {
		h.onBridge(false)
	}
	h.log.Info("guest network policy installed", "bridge", h.policy.Bridge, "guarded_ports", guarded,
		"host_tcp_ports", h.policy.HostTCPPorts, "host_udp_ports", h.policy.HostUDPPorts,
		"isolate_vms", h.policy.IsolateVMs, "private", !h.policy.DenyPrivate)
	return nil
}

// GuardPort guards a device attached to the bridge (see
// network.Host.GuardPort): it may send only from p.MAC and p.IP, which
// should be a lease of the subnet no VM can get. It records the port so that
// later rebuilds keep the guard. Call it after EnsureBridge and before
// anything behind the device sends, and UnguardPort when the device goes
// away.
func (h *hostNet) GuardPort(p network.Port) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := network.GuardPort(h.policy.Bridge, p); err != nil {
		return err
	}
	h.ports[p.Name] = p
	return nil
}

// UnguardPort drops the guard of the device called name; nil when it has
// none. Every guard in the kernel is one recorded here (restore rebuilds the
// tables from the record at daemon start), so a device never guarded needs
// no nftables call, and no privilege.
func (h *hostNet) UnguardPort(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.ports[name]; !ok {
		return nil
	}
	delete(h.ports, name)
	return network.UnguardPort(h.policy.Bridge, name)
}

// CreateTAP creates the TAP device of a VM, owned by owner (the user its
// VMM runs as) and attached to the bridge, and guards it with the VM's MAC
// and IP; the host forgets any neighbour entry of that IP (an earlier VM's
// MAC). On error nothing is left.
func (h *hostNet) CreateTAP(name, mac, ip string, owner vmm.Identity) error {
	port, err := network.ParsePort(name, mac, ip)
	if err != nil {
		return err
	}
	if err := network.CreateTAP(name, h.policy.Bridge, int(owner.UID), int(owner.GID)); err != nil {
		return err
	}
	if err := h.GuardPort(port); err != nil {
		return errors.Join(err, network.DeleteLink(name))
	}
	if err := network.ForgetNeighbour(h.policy.Bridge, port.IP); err != nil {
		return errors.Join(err, h.DeleteTAP(name))
	}
	return nil
}

// AdoptTAP records the TAP of a VM re-adopted at daemon start, so that the
// policy restore rebuilds keeps its guard. It changes nothing on the host.
func (h *hostNet) AdoptTAP(name, mac, ip string) error {
	port, err := network.ParsePort(name, mac, ip)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ports[name] = port
	return nil
}

// CreateDetachedTAP creates a TAP on no bridge, down, owned by owner.
func (h *hostNet) CreateDetachedTAP(name string, owner vmm.Identity) error {
	return network.CreateDetachedTAP(name, int(owner.UID), int(owner.GID))
}

// DeleteTAP deletes the TAP device and its guard.
func (h *hostNet) DeleteTAP(name string) error {
	return errors.Join(network.DeleteLink(name), h.UnguardPort(name))
}

func (h *hostNet) TAPExists(name string) bool {
	ok, _ := network.LinkExists(name)
	return ok
}
