package guestssh

import (
	"fmt"
	"strings"
)

// ConfigDomain is the domain of VM host names (vmdns.Domain): VM dev is
// dev.banger.internal.
const ConfigDomain = "banger.internal"

// ConfigVM is one VM in Config.
type ConfigVM struct {
	Name string
	// Addr is the VM's address; its pinned host key is filed under it
	// (HostKeyAlias) in KnownHostsFile.
	Addr           string
	KnownHostsFile string
}

// Config is an OpenSSH client configuration for reaching VMs by name
// (`ssh dev.banger.internal`, and scp, rsync, git and editors' remote SSH
// with it): one Host block per VM, which names its address (so it works
// even where the host does not resolve banger.internal) and its pinned
// host key, then a `Host *.banger.internal` block with what every VM
// shares: the user, the daemon's key, strict host key checking. OpenSSH
// takes each option from the first block that sets it, so the per-VM
// blocks come first. path is where the daemon keeps it, for the comment
// that says how to include it.
func Config(path, identityFile string, vms []ConfigVM) string {
	var b strings.Builder
	b.WriteString("# banger: VMs by name, kept current by bangerd (`banger ssh-config` prints it).\n")
	b.WriteString("# Use it with this line at the top of ~/.ssh/config: Include " + quote(path) + "\n\n")
	for _, v := range vms {
		fmt.Fprintf(&b, "Host %s.%s\n", v.Name, ConfigDomain)
		fmt.Fprintf(&b, "    HostName %s\n", v.Addr)
		fmt.Fprintf(&b, "    HostKeyAlias %s\n", v.Addr)
		fmt.Fprintf(&b, "    UserKnownHostsFile %s\n\n", quote(v.KnownHostsFile))
	}
	fmt.Fprintf(&b, "Host *.%s\n", ConfigDomain)
	b.WriteString("    User root\n")
	fmt.Fprintf(&b, "    IdentityFile %s\n", quote(identityFile))
	b.WriteString("    IdentitiesOnly yes\n")
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    GlobalKnownHostsFile /dev/null\n")
	b.WriteString("    CheckHostIP no\n")
	b.WriteString("    LogLevel ERROR\n")
	return b.String()
}

// quote writes a path as an ssh_config argument: in double quotes when it
// has a space (ssh_config has no escapes; a path with a double quote
// cannot be written, and banger's paths have none).
func quote(p string) string {
	if strings.ContainsAny(p, " \t") {
		return `"` + p + `"`
	}
	return p
}
