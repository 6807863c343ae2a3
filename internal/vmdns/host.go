package vmdns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver configuration files, in the order HostUpstreams reads them:
// systemd-resolved's list of the real upstream servers first (its stub,
// 127.0.0.53 in /etc/resolv.conf, would also do, but the list keeps the
// server working when the stub is off), then the ordinary file.
var resolvConfs = []string{"/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"}

// upstreamCache keeps the parsed servers of one file until it changes.
var upstreamCache struct {
	sync.Mutex
	path    string
	modTime time.Time
	size    int64
	servers []netip.AddrPort
}

// HostUpstreams returns the host's resolvers (port 53 unless the file
// says otherwise) from the first of systemd-resolved's upstream list and
// /etc/resolv.conf that names any. It reads a file again only when it
// changed.
func HostUpstreams() []netip.AddrPort {
	upstreamCache.Lock()
	defer upstreamCache.Unlock()
	for _, p := range resolvConfs {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		c := &upstreamCache
		if c.path == p && c.modTime.Equal(st.ModTime()) && c.size == st.Size() {
			if len(c.servers) > 0 {
				return c.servers
			}
			continue
		}
		servers, err := ReadResolvConf(p)
		if err != nil {
			continue
		}
		c.path, c.modTime, c.size, c.servers = p, st.ModTime(), st.Size(), servers
		if len(servers) > 0 {
			return servers
		}
	}
	return nil
}

// ReadResolvConf returns the name servers of a resolv.conf file.
func ReadResolvConf(path string) ([]netip.AddrPort, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	port, err := strconv.ParseUint(cc.Port, 10, 16)
	if err != nil {
		port = 53
	}
	var out []netip.AddrPort
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)))
	}
	return out, nil
}

// ErrNoResolved is Register's error on a host where systemd-resolved does
// not run (no /run/systemd/resolve, or no resolvectl).
var ErrNoResolved = errors.New("systemd-resolved does not run here")

// ResolvedRunning reports whether systemd-resolved serves this host's
// names: its runtime folder exists and resolvectl is installed.
func ResolvedRunning() bool {
	if _, err := os.Stat("/run/systemd/resolve"); err != nil {
		return false
	}
	_, err := exec.LookPath("resolvectl")
	return err == nil
}

// RegisterArgs are the resolvectl invocations that send Domain to server
// on link: the link's DNS server, and Domain as its routing-only domain
// ("~banger.internal": only those names go there, and the link is not
// used for other names).
func RegisterArgs(link string, server netip.Addr) [][]string {
	return [][]string{
		{"dns", link, server.String()},
		{"domain", link, "~" + Domain},
	}
}

// Register asks systemd-resolved to send questions for Domain to server
// (the bridge address) on link (the bridge), so NAME.banger.internal
// resolves on the host. The setting lasts while the link exists; call it
// again when the link is made anew. It returns ErrNoResolved when
// systemd-resolved does not run.
func Register(ctx context.Context, link string, server netip.Addr) error {
	if !ResolvedRunning() {
		return ErrNoResolved
	}
	for _, args := range RegisterArgs(link, server) {
		out, err := exec.CommandContext(ctx, "resolvectl", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
