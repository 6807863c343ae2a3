package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/vmdns"
)

// vmNames runs the DNS server for NAME.banger.internal on the bridge
// address (see package vmdns) and registers it with systemd-resolved for
// the bridge link. It starts once the bridge exists (the address must be
// there to listen on): at daemon start when it does, else at the first VM
// start.
type vmNames struct {
	bridge string
	addr   netip.AddrPort
	subnet netip.Prefix
	lookup vmdns.Lookup
	log    *slog.Logger

	mu  sync.Mutex
	srv *vmdns.Server
	// err is why the server does not run (the last attempt's error).
	err error
	// resolved is what systemd-resolved registration said last.
	resolved string
}

func newVMNames(bridge string, subnet netip.Prefix, lookup vmdns.Lookup, log *slog.Logger) *vmNames {
	return &vmNames{
		bridge: bridge, subnet: subnet, lookup: lookup, log: log,
		addr: netip.AddrPortFrom(network.Gateway(subnet), network.DNSPort),
	}
}

// bridgeReady starts the server when it does not run yet, and registers
// it with systemd-resolved when it started now or the bridge was made
// anew (resolved forgets a link's settings with the link). A failure is
// logged and kept for daemon.status and doctor: VMs run without names.
func (n *vmNames) bridgeReady(created bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	started := false
	if n.srv == nil {
		srv, err := vmdns.Start(vmdns.Config{Addr: n.addr, Subnet: n.subnet, Lookup: n.lookup, Host: n.addr.Addr(), Log: n.log})
		n.err = err
		if err != nil {
			n.log.Warn("no DNS server for VM names: NAME."+vmdns.Domain+" does not resolve (see `banger doctor`)", "err", err)
			return
		}
		n.srv, started = srv, true
		n.log.Info("dns server for VM names", "addr", n.addr.String(), "domain", vmdns.Domain)
	}
	if !started && !created {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := vmdns.Register(ctx, n.bridge, n.addr.Addr())
	switch {
	case errors.Is(err, vmdns.ErrNoResolved):
		n.resolved = "systemd-resolved does not run here"
		n.log.Info("systemd-resolved does not run: the host resolves VM names only if its resolver asks " + n.addr.Addr().String() + " for " + vmdns.Domain)
	case err != nil:
		n.resolved = err.Error()
		n.log.Warn("register VM names with systemd-resolved", "bridge", n.bridge, "err", err)
	default:
		n.resolved = "registered for link " + n.bridge
		n.log.Info("systemd-resolved sends "+vmdns.Domain+" to the dns server", "bridge", n.bridge)
	}
}

// status says whether the server runs (its address) or why not, and what
// the systemd-resolved registration said.
func (n *vmNames) status() (addr, errText, resolved string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		addr = n.srv.Addr().String()
	}
	if n.err != nil {
		errText = n.err.Error()
	}
	return addr, errText, n.resolved
}

// close stops the server.
func (n *vmNames) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		n.srv.Close()
		n.srv = nil
	}
}
