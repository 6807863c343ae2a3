package network

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host changes the network state of one network namespace. All its methods
// act on that namespace only, whichever thread or namespace the caller is
// in. A Host is safe for use by one goroutine at a time; Close releases it.
//
// A Host from New never switches namespaces and so needs only CAP_NET_ADMIN.
// A Host from NewAt also needs CAP_SYS_ADMIN for the few operations that the
// kernel ties to the calling thread's namespace (creating a TAP device,
// writing /proc/sys/net); it performs them on a short-lived locked thread
// that enters the namespace and is then discarded, so no other goroutine
// ever runs in the wrong namespace.
type Host struct {
	nl *netlink.Handle
	// ns is the target namespace, or netns.None() for "the namespace the
	// process runs in" (then nothing needs to switch namespaces).
	ns netns.NsHandle
}

// New returns a Host for the network namespace of the calling thread, which
// is the process's namespace unless the caller has locked its goroutine to a
// thread and moved that thread elsewhere (in which case the caller must stay
// on that thread while it uses the Host).
func New() (*Host, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", privileged(err))
	}
	return &Host{nl: h, ns: netns.None()}, nil
}

// NewAt returns a Host for the network namespace that ns refers to. It
// duplicates ns, so the caller may close its handle at any time; the
// namespace stays alive at least until the Host is closed.
func NewAt(ns netns.NsHandle) (*Host, error) {
	if !ns.IsOpen() {
		return nil, errors.New("open network namespace: the namespace handle is closed")
	}
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate network namespace handle: %w", err)
	}
	dup := netns.NsHandle(fd)
	h, err := netlink.NewHandleAt(dup, unix.NETLINK_ROUTE)
	if err != nil {
		_ = dup.Close()
		return nil, fmt.Errorf("open netlink socket in network namespace %s: %w", dup, err)
	}
	return &Host{nl: h, ns: dup}, nil
}

// Close releases the Host's netlink socket and namespace handle. It does not
// undo any change the Host made.
func (h *Host) Close() error {
	h.nl.Close()
	if h.ns.IsOpen() {
		err := h.ns.Close()
		h.ns = netns.None()
		if err != nil {
			return fmt.Errorf("close network namespace handle: %w", err)
		}
	}
	return nil
}

// inNS runs fn in h's namespace. Some kernel interfaces (the TUN ioctls,
// /proc/sys/net) act on the calling thread's namespace rather than on a
// socket's, so they cannot go through h.nl.
func (h *Host) inNS(fn func() error) error {
	if !h.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: when this goroutine returns, the
		// runtime ends the thread instead of reusing it, so it cannot carry
		// the foreign namespace into unrelated goroutines.
		runtime.LockOSThread()
		if err := netns.Set(h.ns); err != nil {
			errc <- fmt.Errorf("enter network namespace %s (needs CAP_SYS_ADMIN): %w", h.ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// linkByName returns the link called name, or nil and no error when there is
// none.
func (h *Host) linkByName(name string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	if err != nil {
		return nil, privileged(err)
	}
	return l, nil
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed under it; netlink returns partial results in that case.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 5 {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false // non-canonical mask
	}
	if bits == 128 && a.Is4() {
		ones -= 96 // a 16-byte mask on an IPv4-mapped address
	}
	p := netip.PrefixFrom(a, ones)
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// HostPrefixes returns every IPv4 route destination (in all routing tables)
// and every IPv4 interface address prefix of the Host's namespace, masked,
// deduplicated and sorted, for ChooseSubnet. Default routes are left out, and
// so are /1 routes, which VPN clients install in pairs (0.0.0.0/1 and
// 128.0.0.0/1) as a stand-in for a default route; counting them would make
// every subnet look taken. It includes the subnet of banger's own bridge when
// the bridge exists (see BridgeSubnet).
func (h *Host) HostPrefixes() ([]netip.Prefix, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", privileged(err))
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", privileged(err))
	}
	seen := make(map[netip.Prefix]bool)
	var out []netip.Prefix
	add := func(n *net.IPNet) {
		p, ok := prefixFromIPNet(n)
		if !ok || !p.Addr().Is4() || p.Bits() <= 1 || seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
	}
	for _, a := range addrs {
		add(a.IPNet)
	}
	for _, r := range routes {
		add(r.Dst) // nil for a default route
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	return out, nil
}

// BridgeSubnet returns the subnet of the first IPv4 address on the bridge
// called name, so that a restarted daemon keeps the subnet it chose before.
// ok is false (and err nil) when the bridge does not exist or has no IPv4
// address. It returns an error wrapping ErrNotBridge when a link called name
// exists and is not a bridge.
func (h *Host) BridgeSubnet(name string) (subnet netip.Prefix, ok bool, err error) {
	link, err := h.linkByName(name)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("look up bridge %q: %w", name, err)
	}
	if link == nil {
		return netip.Prefix{}, false, nil
	}
	if link.Type() != "bridge" {
		return netip.Prefix{}, false, notBridgeError(name, link)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("list addresses of bridge %q: %w", name, privileged(err))
	}
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if p, ok := prefixFromIPNet(a.IPNet); ok && p.Addr().Is4() {
			return p, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

func notBridgeError(name string, link netlink.Link) error {
	return fmt.Errorf("link %q: %w (it is a %s device): set network.bridge in banger's config.toml to another name, "+
		"or remove the device with `sudo ip link delete %s` if nothing uses it", name, ErrNotBridge, link.Type(), name)
}

// EnsureBridge makes sure a Linux bridge called name exists, carries the
// gateway address gw (an IPv4 host address with its subnet length, such as
// 172.30.0.1/24, see GatewayPrefix) and is up. It is idempotent: an existing
// bridge is kept, an address already present is not added twice, and other
// addresses on the bridge are left alone. It returns an error wrapping
// ErrNotBridge when a link called name exists and is not a bridge. If it
// creates the bridge and a later step fails, it deletes the bridge again.
func (h *Host) EnsureBridge(name string, gw netip.Prefix) (err error) {
	if err := checkLinkName(name); err != nil {
		return fmt.Errorf("ensure bridge: %w", err)
	}
	if checkSubnet(gw) != nil || gw.Addr() == gw.Masked().Addr() || gw.Addr() == Broadcast(gw) {
		return fmt.Errorf("ensure bridge %q: gateway %s must be an IPv4 host address with its subnet length, such as 172.30.0.1/24", name, gw)
	}
	link, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("ensure bridge %q: %w", name, err)
	}
	if link == nil {
		addErr := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
		switch {
		case addErr == nil:
			defer func() {
				if err == nil {
					return
				}
				if derr := h.deleteLink(name); derr != nil {
					err = errors.Join(err, fmt.Errorf("remove half-configured bridge %q: %w", name, derr))
				}
			}()
		case errors.Is(addErr, unix.EEXIST):
			// Someone created it since the lookup; the checks below decide
			// whether it is usable.
		default:
			return fmt.Errorf("create bridge %q: %w", name, privileged(addErr))
		}
		if link, err = h.linkByName(name); err != nil {
			return fmt.Errorf("ensure bridge %q: %w", name, err)
		}
		if link == nil {
			return fmt.Errorf("create bridge %q: it vanished right after creation; is another program managing it?", name)
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("ensure bridge: %w", notBridgeError(name, link))
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of bridge %q: %w", name, privileged(err))
	}
	has := false
	for _, a := range addrs {
		p, ok := prefixFromIPNet(a.IPNet)
		if ok && ip4(a.IP) == gw.Addr() && p.Bits() == gw.Bits() {
			has = true
			break
		}
	}
	if !has {
		if err := h.subnetFree(link, gw.Masked()); err != nil {
			return fmt.Errorf("ensure bridge %q: %w", name, err)
		}
		if err := h.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(gw)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to bridge %q: %w", gw, name, privileged(err))
		}
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set bridge %q up: %w", name, privileged(err))
	}
	return nil
}

// subnetFree returns an error naming the other link when an address or
// route of another link than bridge overlaps subnet: replies to the VMs
// (or to a build's sandbox) could leave through that link and be lost.
func (h *Host) subnetFree(bridge netlink.Link, subnet netip.Prefix) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list host addresses: %w", privileged(err))
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list host routes: %w", privileged(err))
	}
	taken := func(index int, n *net.IPNet) error {
		p, ok := prefixFromIPNet(n)
		if index == bridge.Attrs().Index || !ok || !p.Addr().Is4() || p.Bits() == 0 || !p.Masked().Overlaps(subnet) {
			return nil
		}
		other := fmt.Sprintf("link index %d", index)
		if l, err := h.nl.LinkByIndex(index); err == nil {
			other = l.Attrs().Name
		}
		return fmt.Errorf("the VM subnet %s overlaps %s on %s: set network.subnet to a free prefix in config.toml (then remove the bridge: `ip link del %s`), or remove %s if it is left over", subnet, p.Masked(), other, bridge.Attrs().Name, other)
	}
	for _, a := range addrs {
		if err := taken(a.LinkIndex, a.IPNet); err != nil {
			return err
		}
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if err := taken(r.LinkIndex, r.Dst); err != nil {
			return err
		}
	}
	return nil
}

func ip4(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// RemoveBridge deletes the bridge called name; TAP devices enslaved to it
// stay, detached. It returns nil when no link of that name exists, and an
// error wrapping ErrNotBridge (deleting nothing) when the link is not a
// bridge.
func (h *Host) RemoveBridge(name string) error {
	link, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("remove bridge %q: %w", name, err)
	}
	if link == nil {
		return nil
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("remove bridge: %w", notBridgeError(name, link))
	}
	if err := h.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove bridge %q: %w", name, privileged(err))
	}
	return nil
}

// tapFlags: a TAP (Ethernet frames) without the 4-byte packet-info header and
// with the virtio-net header, which is what both QEMU (vhost/virtio-net) and
// Firecracker expect when they open the device by name.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// testHookAfterTAP, when set by a test, runs after the TAP device exists and
// before it is configured; an error from it makes CreateTAP fail there.
var testHookAfterTAP func(name string) error

// CreateTAP creates a persistent TAP device called name (IFF_TAP, IFF_NO_PI,
// IFF_VNET_HDR), owned by uid and gid so that a VMM running as that user can
// open it (QEMU: -netdev tap,ifname=NAME,script=no,downscript=no; Firecracker:
// host_dev_name), enslaves it to bridge and sets it up. A negative uid or gid
// leaves that owner unset (then only a CAP_NET_ADMIN process may open it).
// A stale TAP device called name is deleted first; any other kind of device
// with that name is an error and is left alone. The bridge must exist (see
// EnsureBridge). On any error nothing is left behind.
//
// Ownership is half of what an unprivileged VMM needs: it must also be able
// to open /dev/net/tun, which distributions make mode 0666 but some hosts
// leave 0600.
func (h *Host) CreateTAP(name, bridge string, uid, gid int) (err error) {
	if err := checkLinkName(name); err != nil {
		return fmt.Errorf("create tap: %w", err)
	}
	br, err := h.linkByName(bridge)
	if err != nil {
		return fmt.Errorf("create tap %q: look up bridge %q: %w", name, bridge, err)
	}
	if br == nil {
		return fmt.Errorf("create tap %q: bridge %q does not exist: check network.bridge in banger's config.toml, "+
			"or restart bangerd so that it recreates the bridge", name, bridge)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("create tap %q: %w", name, notBridgeError(bridge, br))
	}
	old, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if old != nil {
		if old.Type() != "tuntap" {
			return fmt.Errorf("create tap %q: a %s device with that name already exists: remove it with `sudo ip link delete %s` if nothing uses it",
				name, old.Type(), name)
		}
		// Left over from a VM whose cleanup did not run; its owner and
		// flags may be wrong, so start afresh.
		if err := h.nl.LinkDel(old); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("create tap %q: remove stale device: %w", name, privileged(err))
		}
	}
	if err := h.inNS(func() error { return makeTAP(name, uid, gid) }); err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	defer func() {
		if err == nil {
			return
		}
		if derr := h.deleteLink(name); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove half-configured tap %q: %w", name, derr))
		}
	}()
	if testHookAfterTAP != nil {
		if err := testHookAfterTAP(name); err != nil {
			return fmt.Errorf("create tap %q: %w", name, err)
		}
	}
	tap, err := h.linkByName(name)
	if err != nil {
		return fmt.Errorf("create tap %q: %w", name, err)
	}
	if tap == nil {
		return fmt.Errorf("create tap %q: it vanished right after creation; is another program managing it?", name)
	}
	if err := h.nl.LinkSetMaster(tap, br); err != nil {
		return fmt.Errorf("create tap %q: attach to bridge %q: %w", name, bridge, privileged(err))
	}
	if err := h.nl.LinkSetUp(tap); err != nil {
		return fmt.Errorf("create tap %q: set up: %w", name, privileged(err))
	}
	return nil
}

// makeTAP creates the device in the calling thread's network namespace.
func makeTAP(name string, uid, gid int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("open /dev/net/tun: %w: the kernel has no TUN/TAP support loaded; run `sudo modprobe tun`", err)
	}
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", privileged(err))
	}
	// Until TUNSETPERSIST the device lives only as long as fd, so returning
	// early (and closing fd) leaves nothing behind.
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("interface name %q: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", privileged(err))
	}
	if uid >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
			return fmt.Errorf("set owner uid %d: %w", uid, privileged(err))
		}
	}
	if gid >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
			return fmt.Errorf("set owner gid %d: %w", gid, privileged(err))
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("make persistent: %w", privileged(err))
	}
	return nil
}

func (h *Host) deleteLink(name string) error {
	link, err := h.linkByName(name)
	if err != nil || link == nil {
		return err
	}
	if err := h.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return privileged(err)
	}
	return nil
}

// DeleteLink deletes the network device called name, whatever its kind. It
// returns nil when there is no such device.
func (h *Host) DeleteLink(name string) error {
	if err := h.deleteLink(name); err != nil {
		return fmt.Errorf("delete link %q: %w", name, err)
	}
	return nil
}

// ForgetNeighbour removes the bridge's neighbour (ARP) entry for ip, if it
// has one: a VM given ip now starts afresh, where an entry left by an
// earlier VM of that address would send the host's first packets to that
// VM's MAC until it expired (and TCP's first retry comes a second later).
// It returns nil when there is no such bridge or entry.
func (h *Host) ForgetNeighbour(bridge string, ip netip.Addr) error {
	br, err := h.linkByName(bridge)
	if err != nil || br == nil {
		return err
	}
	n := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.IP(ip.AsSlice())}
	if err := h.nl.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("forget the neighbour entry of %s on %s: %w", ip, bridge, privileged(err))
	}
	return nil
}

// LinkExists reports whether a network device called name exists.
func (h *Host) LinkExists(name string) (bool, error) {
	link, err := h.linkByName(name)
	if err != nil {
		return false, fmt.Errorf("look up link %q: %w", name, err)
	}
	return link != nil, nil
}

// withHost runs fn with a Host for the process's own namespace.
func withHost(fn func(*Host) error) error {
	h, err := New()
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}

// HostPrefixes is New().HostPrefixes() for the process's own namespace.
func HostPrefixes() (out []netip.Prefix, err error) {
	err = withHost(func(h *Host) error { out, err = h.HostPrefixes(); return err })
	return out, err
}

// BridgeSubnet is New().BridgeSubnet(name) for the process's own namespace.
func BridgeSubnet(name string) (subnet netip.Prefix, ok bool, err error) {
	err = withHost(func(h *Host) error { subnet, ok, err = h.BridgeSubnet(name); return err })
	return subnet, ok, err
}

// EnsureBridge is New().EnsureBridge(name, gw) for the process's own
// namespace.
func EnsureBridge(name string, gw netip.Prefix) error {
	return withHost(func(h *Host) error { return h.EnsureBridge(name, gw) })
}

// RemoveBridge is New().RemoveBridge(name) for the process's own namespace.
func RemoveBridge(name string) error {
	return withHost(func(h *Host) error { return h.RemoveBridge(name) })
}

// CreateTAP is New().CreateTAP(name, bridge, uid, gid) for the process's own
// namespace.
func CreateTAP(name, bridge string, uid, gid int) error {
	return withHost(func(h *Host) error { return h.CreateTAP(name, bridge, uid, gid) })
}

// DeleteLink is New().DeleteLink(name) for the process's own namespace.
func DeleteLink(name string) error {
	return withHost(func(h *Host) error { return h.DeleteLink(name) })
}

// ForgetNeighbour is New().ForgetNeighbour(bridge, ip) for the process's
// own namespace.
func ForgetNeighbour(bridge string, ip netip.Addr) error {
	return withHost(func(h *Host) error { return h.ForgetNeighbour(bridge, ip) })
}

// LinkExists is New().LinkExists(name) for the process's own namespace.
func LinkExists(name string) (ok bool, err error) {
	err = withHost(func(h *Host) error { ok, err = h.LinkExists(name); return err })
	return ok, err
}

// CreateDetachedTAP creates a persistent TAP device called name owned by uid
// and gid, like CreateTAP, but enslaves it to no bridge and leaves it down,
// so it carries no traffic: for tests of VMMs that open a TAP by name.
// Remove it with DeleteLink.
func CreateDetachedTAP(name string, uid, gid int) error {
	return withHost(func(h *Host) error {
		if err := h.inNS(func() error { return makeTAP(name, uid, gid) }); err != nil {
			return fmt.Errorf("create tap %q: %w", name, err)
		}
		return nil
	})
}
