package network

import (
	"crypto/rand"
	"fmt"
)

// macPrefix is QEMU's OUI. Its first octet 0x52 has the locally-administered
// bit set and the multicast bit clear, so the addresses cannot clash with a
// vendor's and are valid unicast source addresses.
const macPrefix = "52:54:00"

// RandomMAC returns a random locally administered unicast MAC address of the
// form "52:54:00:xx:xx:xx" in lowercase hex, as QEMU and Firecracker accept
// it. It fails only when the system's random source does.
func RandomMAC() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate mac address: %w", err)
	}
	return fmt.Sprintf("%s:%02x:%02x:%02x", macPrefix, b[0], b[1], b[2]), nil
}

// ValidMAC reports whether s can be given to a guest NIC: six colon-separated
// two-digit hex octets (either case), a unicast address (multicast bit clear)
// and not all zeros.
func ValidMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	var octets [6]byte
	for i := range octets {
		if i > 0 && s[3*i-1] != ':' {
			return false
		}
		hi, ok1 := hexDigit(s[3*i])
		lo, ok2 := hexDigit(s[3*i+1])
		if !ok1 || !ok2 {
			return false
		}
		octets[i] = hi<<4 | lo
	}
	if octets[0]&1 != 0 {
		return false
	}
	return octets != [6]byte{}
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
