package network

import (
	"net"
	"regexp"
	"testing"
)

func TestRandomMAC(t *testing.T) {
	format := regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`)
	seen := map[string]bool{}
	for range 64 {
		mac, err := RandomMAC()
		if err != nil {
			t.Fatalf("RandomMAC: %v", err)
		}
		if !format.MatchString(mac) {
			t.Fatalf("RandomMAC = %q, want 52:54:00:xx:xx:xx in lowercase", mac)
		}
		hw, err := net.ParseMAC(mac)
		if err != nil {
			t.Fatalf("net.ParseMAC(%q): %v", mac, err)
		}
		if hw[0]&0x02 == 0 || hw[0]&0x01 != 0 {
			t.Fatalf("RandomMAC = %q: want locally administered unicast", mac)
		}
		if !ValidMAC(mac) {
			t.Fatalf("ValidMAC(RandomMAC() = %q) = false", mac)
		}
		seen[mac] = true
	}
	// 64 draws from 2^24: a repeat is a one-in-a-few-thousand event, many
	// repeats mean the randomness is broken.
	if len(seen) < 60 {
		t.Errorf("only %d distinct MACs in 64 draws", len(seen))
	}
}

func TestValidMAC(t *testing.T) {
	tests := []struct {
		mac  string
		want bool
	}{
		{"52:54:00:12:34:56", true},
		{"52:54:00:AB:cd:Ef", true},
		{"02:00:00:00:00:01", true},
		{"00:00:00:00:00:00", false}, // all zeros
		{"01:00:5e:00:00:01", false}, // multicast
		{"ff:ff:ff:ff:ff:ff", false}, // broadcast
		{"52:54:00:12:34", false},
		{"52:54:00:12:34:56:78", false},
		{"52-54-00-12-34-56", false},
		{"5254.0012.3456", false},
		{"52:54:00:12:34:5g", false},
		{"52:54:00:12:3:456", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.mac, func(t *testing.T) {
			if got := ValidMAC(tt.mac); got != tt.want {
				t.Errorf("ValidMAC(%q) = %v, want %v", tt.mac, got, tt.want)
			}
		})
	}
}
