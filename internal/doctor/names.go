package doctor

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// NamesHost is the name the names check resolves on the host: bangerd's
// DNS server answers it with the bridge address (vmdns.HostName under
// vmdns.Domain) whenever it runs, VMs or not.
const NamesHost = "host.banger.internal"

// NamesStatus is what the running daemon says of its DNS server
// (api.DaemonStatus), for NamesResult.
type NamesStatus struct {
	Bridge string
	// Server is the server's address ("172.30.0.1:53"), empty when it
	// does not run; Err says why.
	Server, Err string
	// Resolved is what registering with systemd-resolved said.
	Resolved string
}

// checkNames reports env.Names's finding: only the running daemon knows
// its DNS server.
func checkNames(ctx context.Context, env *Env) Result {
	if env.Names == nil {
		return Result{Status: StatusSkip, Detail: "VM names are served by bangerd, which this caller cannot ask"}
	}
	return env.Names(ctx)
}

// ResolveHost resolves name the way programs on this host do (getent,
// through the C library's resolver) and returns its first address, ""
// when it does not resolve.
func ResolveHost(ctx context.Context, name string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", "ahostsv4", name).Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// NamesResult is the names check's finding: whether the daemon's DNS
// server runs, and whether the host resolves NamesHost to the server's
// address (resolved is what ResolveHost gave; resolvedRuns whether
// systemd-resolved runs here).
func NamesResult(st NamesStatus, resolved string, resolvedRuns bool) Result {
	if st.Err != "" {
		return Result{Status: StatusWarn,
			Detail: "no DNS server for NAME.banger.internal: " + st.Err + " (VMs run, without names)",
			Fix: "bangerd binds port 53 on the bridge address: run it as root, or `sudo setcap cap_net_admin,cap_net_bind_service+ep $(which bangerd)`; " +
				"if another DNS server holds that address and port, stop it; then `banger daemon restart`"}
	}
	if st.Server == "" {
		return Result{Status: StatusSkip, Detail: "the DNS server for NAME.banger.internal starts with the bridge, at the first VM start"}
	}
	addr, _, _ := strings.Cut(st.Server, ":")
	if resolved == addr {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("NAME.banger.internal resolves on this host and in guests (server %s)", st.Server)}
	}
	detail := fmt.Sprintf("guests resolve NAME.banger.internal (server %s), this host does not", st.Server)
	if resolved != "" {
		detail = fmt.Sprintf("%s resolves to %s on this host, not to %s: another resolver answers for banger.internal", NamesHost, resolved, addr)
	}
	fix := fmt.Sprintf("systemd-resolved does not run here: make your resolver ask %s for banger.internal (dnsmasq: server=/banger.internal/%s), "+
		"or use `banger ssh-config`, whose Host blocks need no names", addr, addr)
	if resolvedRuns {
		fix = fmt.Sprintf("bangerd registers the server with systemd-resolved (it said: %s); do it by hand as root: "+
			"`resolvectl dns %s %s && resolvectl domain %s '~banger.internal'`", st.Resolved, st.Bridge, addr, st.Bridge)
	}
	return Result{Status: StatusWarn, Detail: detail, Fix: fix}
}
