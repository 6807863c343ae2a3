package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/testhost"
)

// TestNetworkPolicy checks the guest network policy from inside real
// guests: the host and 169.254.169.254 are out of reach, a host port opens
// with network.host_ports, a spoofed source gets nothing through, VMs reach
// each other unless network.isolate_vms, and the rules follow the VMs
// through a daemon crash and their removal. Two VMs serve every check:
// config changes take effect with `banger daemon restart`, which running
// VMs survive.
func TestNetworkPolicy(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.debianImage(ctx)
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	logStep := stepLogger(t)

	e.createWarm(ctx, []string{"a", "b"}, "--cpus", "1", "--memory", "512")
	logStep("create two VMs from a warm template")
	a, b := e.vm(ctx, "a"), e.vm(ctx, "b")
	gw := network.Gateway(netip.MustParsePrefix(e.daemonStatus(ctx).Subnet))
	aIP, bIP := netip.MustParseAddr(a.IP), netip.MustParseAddr(b.IP)

	// Host listeners in the test namespace: on the bridge address, and on
	// 169.254.169.254 (on lo: the test kernel may lack dummy devices), both
	// on the port that host_ports will open.
	const port = 8080
	if out, err := e.inNetns("ip", "addr", "add", "169.254.169.254/32", "dev", "lo"); err != nil {
		t.Fatalf("add the metadata address: %v: %s", err, out)
	}
	meta := netip.MustParseAddr("169.254.169.254")
	hostL := listenInNetns(t, e.netns, netip.AddrPortFrom(gw, port))
	metaL := listenInNetns(t, e.netns, netip.AddrPortFrom(meta, port))

	// Default policy.
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(gw, port), false)
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(meta, port), false)
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(bIP, 22), true)
	if got := hostL.peers(); len(got) != 0 {
		t.Errorf("the host listener saw connections %v under the default policy", got)
	}
	logStep("default policy checks")

	// Open the port, isolate the VMs.
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\nhost_ports = [%d]\nisolate_vms = true\n", e.bridge, port))
	e.must(ctx, "daemon", "restart")
	logStep("daemon restart with host_ports and isolate_vms")
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(gw, port), true)
	if got := hostL.peers(); !slices.Contains(got, aIP) {
		t.Errorf("the host listener saw %v, want a connection from a (%s)", got, aIP)
	}
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(meta, port), false)
	if got := metaL.peers(); len(got) != 0 {
		t.Errorf("the listener on %s saw connections %v", meta, got)
	}
	// A spoofed source: the guest adds an address and connects from it to
	// the port that is now open.
	spoof4 := gw.As4()
	spoof4[3] = 200
	spoof := netip.AddrFrom4(spoof4)
	r := e.banger(ctx, "vm", "ssh", "--no-remind", "a", "--", "sh", "-c", fmt.Sprintf(
		`dev=$(ip -o route get %[1]s | sed -n 's/.* dev \([^ ]*\).*/\1/p')
		ip addr add %[2]s/32 dev "$dev" && ip route add %[1]s/32 dev "$dev" src %[2]s || exit 99
		timeout 3 bash -c 'exec 3<>/dev/tcp/%[1]s/%[3]d'; rc=$?
		ip route del %[1]s/32 dev "$dev" src %[2]s; ip addr del %[2]s/32 dev "$dev"
		exit $rc`, gw, spoof, port))
	if r.code != 124 {
		t.Errorf("connect from the spoofed %s: exit %d (%s), want 124 (timed out: dropped)", spoof, r.code, r.stderr)
	}
	if got := hostL.peers(); slices.Contains(got, spoof) {
		t.Errorf("the host listener saw a connection from the spoofed %s", spoof)
	}
	// Isolation: neither directly on the bridge nor routed through the
	// host (both guests route to each other through the gateway, and take
	// no ICMP redirects).
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(bIP, 22), false)
	for _, g := range []struct {
		vm   string
		peer netip.Addr
	}{{"a", bIP}, {"b", aIP}} {
		e.must(ctx, "vm", "ssh", "--no-remind", g.vm, "--", "sh", "-c", fmt.Sprintf(
			`for f in /proc/sys/net/ipv4/conf/*/accept_redirects; do echo 0 > "$f"; done; ip route add %s/32 via %s`, g.peer, gw))
	}
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(bIP, 22), false)
	tables := e.nftTable("bridge")
	for _, want := range []string{"iifname @ports drop", a.TAP, b.TAP} {
		if !strings.Contains(tables, want) {
			t.Errorf("table bridge %s lacks %q:\n%s", network.TableName(e.bridge), want, tables)
		}
	}
	logStep("host_ports, spoofing and isolate_vms checks")

	// Back to the default: the VMs reach each other again (the routes
	// through the gateway are still in place).
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\n", e.bridge))
	e.must(ctx, "daemon", "restart")
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(bIP, 22), true)
	guestConnect(ctx, t, e, "a", netip.AddrPortFrom(gw, port), false)
	logStep("daemon restart with the default policy, checks")

	// A bad config is refused before a daemon starts, naming the entry.
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\nhost_ports = [22, \"80/sctp\"]\n", e.bridge))
	if stderr := e.fails(ctx, "daemon", "restart"); !strings.Contains(stderr, `network.host_ports[1] = "80/sctp"`) {
		t.Errorf("daemon restart with a bad host_ports entry: %s", stderr)
	}
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\n", e.bridge))
	if got := e.vm(ctx, "a"); got.State != api.StateRunning { // starts the daemon again
		t.Fatalf("a after a refused daemon restart: %s", got.State)
	}

	// A crash: the daemon is killed, b's VMM dies while no daemon runs. The
	// next daemon keeps a's guard and drops b's.
	st := e.daemonStatus(ctx)
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(st.PID, 0) != nil })
	if err := syscall.Kill(b.PID, syscall.SIGKILL); err != nil { // read before the crash
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b's VMM to die", func() bool { return syscall.Kill(b.PID, 0) != nil })
	if got := e.vm(ctx, "b"); got.State != api.StateStopped { // starts a daemon
		t.Fatalf("b after its VMM died with the daemon down: %s", got.State)
	}
	guards := e.nftTable("netdev")
	if !strings.Contains(guards, "port-"+a.TAP) || strings.Contains(guards, b.TAP) {
		t.Errorf("guards after the crash: want a's TAP %s and not b's %s:\n%s", a.TAP, b.TAP, guards)
	}
	e.must(ctx, "vm", "ssh", "--no-remind", "a", "--", "true")
	logStep("crash and restart")

	e.must(ctx, "vm", "rm", "--force", "a", "b")
	if guards := e.nftTable("netdev"); strings.Contains(guards, "chain") {
		t.Errorf("guards left after vm rm:\n%s", guards)
	}
	if ports := e.nftTable("bridge"); strings.Contains(ports, "elements") {
		t.Errorf("ports left after vm rm:\n%s", ports)
	}
	assertNoLeaks(ctx, t, e)
	logStep("vm rm")
}

// nftTable returns `nft list table FAMILY banger-BRIDGE` in the test
// namespace.
func (e *env) nftTable(family string) string {
	e.t.Helper()
	out, err := e.inNetns("nft", "list", "table", family, network.TableName(e.bridge))
	if err != nil {
		e.t.Fatalf("nft list table %s %s: %v: %s", family, network.TableName(e.bridge), err, out)
	}
	return out
}

// guestConnect opens a TCP connection from guest vm to addr (bash's
// /dev/tcp, within 3 seconds). want false means dropped: the attempt must
// time out, since a refusal would mean the packet reached its target.
func guestConnect(ctx context.Context, t *testing.T, e *env, vm string, addr netip.AddrPort, want bool) {
	t.Helper()
	r := e.banger(ctx, "vm", "ssh", "--no-remind", vm, "--", "timeout", "3", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr.Addr(), addr.Port()))
	switch {
	case want && r.code != 0:
		t.Errorf("%s -> %s: exit %d (%s), want a connection", vm, addr, r.code, strings.TrimSpace(r.stderr))
	case !want && r.code != 124:
		t.Errorf("%s -> %s: exit %d (%s), want 124 (timed out: dropped)", vm, addr, r.code, strings.TrimSpace(r.stderr))
	}
}

// peerLog is a TCP listener that records who connected.
type peerLog struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (l *peerLog) peers() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.addrs)
}

// listenInNetns listens on addr inside the named network namespace until
// the test ends.
func listenInNetns(t *testing.T, name string, addr netip.AddrPort) *peerLog {
	t.Helper()
	var ln net.Listener
	err := testhost.InNamedNetns(name, func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	l := &peerLog{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
				l.mu.Lock()
				l.addrs = append(l.addrs, ap.Addr().Unmap())
				l.mu.Unlock()
			}
			c.Close()
		}
	}()
	return l
}
