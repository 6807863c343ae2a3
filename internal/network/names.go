package network

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
)

// TAPPrefix starts the name of every TAP device banger creates, so that a
// human (or a cleanup pass) can tell banger's devices apart.
const TAPPrefix = "bgr-"

// maxLinkName is IFNAMSIZ-1: the kernel's limit on an interface name.
const maxLinkName = 15

// lowerBase32 is base32 in lowercase without padding: its alphabet (a-z,
// 2-7) is safe in interface names.
var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// TAPName returns the name of the TAP device for the VM with the given id:
// TAPPrefix followed by 11 characters derived from a SHA-256 of the id. The
// result is always 15 bytes (IFNAMSIZ-1), uses only [a-z0-9-], is stable
// (the same id always gives the same name, so a restarted daemon finds its
// devices again) and differs for different ids with overwhelming probability
// (55 bits). The id
// is hashed rather than truncated because ids that share a long prefix
// ("dev-vm-1", "dev-vm-2") would otherwise collide.
func TAPName(vmID string) string {
	sum := sha256.Sum256([]byte(vmID))
	return TAPPrefix + lowerBase32.EncodeToString(sum[:])[:maxLinkName-len(TAPPrefix)]
}

// checkLinkName rejects names the kernel would refuse, with a message that
// names the limit, before anything is created.
func checkLinkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > maxLinkName:
		return fmt.Errorf("interface name %q is %d bytes; Linux allows at most %d", name, len(name), maxLinkName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("interface name %q contains a character Linux does not allow ('/', ':' or whitespace)", name)
	}
	return nil
}
