package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestDefaultCandidates(t *testing.T) {
	c := DefaultCandidates()
	if len(c) < 5 {
		t.Fatalf("DefaultCandidates() has %d entries, want at least 5", len(c))
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range c {
		if !p.Addr().Is4() || p.Bits() != 24 || p != p.Masked() || !p.Addr().IsPrivate() {
			t.Errorf("candidate %s: want a masked private IPv4 /24", p)
		}
		if seen[p] {
			t.Errorf("candidate %s listed twice", p)
		}
		seen[p] = true
	}
	if c[0] != netip.MustParsePrefix("172.30.0.0/24") {
		t.Errorf("first candidate = %s, want 172.30.0.0/24", c[0])
	}
	// The caller owns the slice: changing it must not change the defaults.
	c[0] = netip.MustParsePrefix("10.0.0.0/24")
	if DefaultCandidates()[0] != netip.MustParsePrefix("172.30.0.0/24") {
		t.Error("DefaultCandidates returned shared state")
	}
}

func TestChooseSubnet(t *testing.T) {
	cands := prefixes("172.30.0.0/24", "172.31.0.0/24", "10.213.0.0/24")
	tests := []struct {
		name       string
		existing   []netip.Prefix
		candidates []netip.Prefix
		want       string
		wantErr    bool
	}{
		{name: "nothing in use", existing: nil, candidates: cands, want: "172.30.0.0/24"},
		{name: "unrelated routes", existing: prefixes("192.168.1.0/24", "10.0.0.0/8", "127.0.0.0/8"), candidates: cands, want: "172.30.0.0/24"},
		{name: "same subnet taken", existing: prefixes("172.30.0.0/24"), candidates: cands, want: "172.31.0.0/24"},
		{name: "host address inside", existing: prefixes("172.30.0.77/32"), candidates: cands, want: "172.31.0.0/24"},
		{name: "unmasked address prefix", existing: prefixes("172.30.0.77/24"), candidates: cands, want: "172.31.0.0/24"},
		{name: "wider route covers two", existing: prefixes("172.30.0.0/15"), candidates: cands, want: "10.213.0.0/24"},
		{name: "narrower route inside", existing: prefixes("172.30.0.128/25", "172.31.0.0/30"), candidates: cands, want: "10.213.0.0/24"},
		{name: "default route ignored", existing: prefixes("0.0.0.0/0"), candidates: cands, want: "172.30.0.0/24"},
		{name: "ipv6 ignored", existing: prefixes("::/0", "fd00::/8", "::ffff:172.30.0.0/120"), candidates: cands, want: "172.30.0.0/24"},
		{name: "invalid existing ignored", existing: []netip.Prefix{{}}, candidates: cands, want: "172.30.0.0/24"},
		{name: "invalid candidate skipped", existing: nil, candidates: []netip.Prefix{{}, netip.MustParsePrefix("10.213.0.0/24")}, want: "10.213.0.0/24"},
		{name: "candidate masked", existing: nil, candidates: prefixes("10.213.0.9/24"), want: "10.213.0.0/24"},
		{name: "all collide", existing: prefixes("172.16.0.0/12", "10.0.0.0/8"), candidates: cands, wantErr: true},
		{name: "no candidates", existing: nil, candidates: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSubnet(tt.existing, tt.candidates)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ChooseSubnet = %s, want an error", got)
				}
				if !errors.Is(err, ErrNoFreeSubnet) {
					t.Errorf("error %v does not wrap ErrNoFreeSubnet", err)
				}
				if !strings.Contains(err.Error(), "network.subnet") {
					t.Errorf("error %q does not tell the user to set network.subnet", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ChooseSubnet: %v", err)
			}
			if got.String() != tt.want {
				t.Errorf("ChooseSubnet = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestChooseSubnetErrorListsCandidates(t *testing.T) {
	_, err := ChooseSubnet(prefixes("172.30.0.0/16"), prefixes("172.30.1.0/24", "172.30.2.0/24"))
	if err == nil || !strings.Contains(err.Error(), "172.30.1.0/24, 172.30.2.0/24") {
		t.Errorf("error %v does not list the candidates tried", err)
	}
}

func TestGateway(t *testing.T) {
	tests := []struct {
		subnet, want, wantPrefix, wantBroadcast string
	}{
		{"172.30.0.0/24", "172.30.0.1", "172.30.0.1/24", "172.30.0.255"},
		{"172.30.0.99/24", "172.30.0.1", "172.30.0.1/24", "172.30.0.255"},
		{"10.213.0.0/16", "10.213.0.1", "10.213.0.1/16", "10.213.255.255"},
		{"192.168.213.4/30", "192.168.213.5", "192.168.213.5/30", "192.168.213.7"},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.subnet)
			if got := Gateway(p).String(); got != tt.want {
				t.Errorf("Gateway = %s, want %s", got, tt.want)
			}
			if got := GatewayPrefix(p).String(); got != tt.wantPrefix {
				t.Errorf("GatewayPrefix = %s, want %s", got, tt.wantPrefix)
			}
			if got := Broadcast(p).String(); got != tt.wantBroadcast {
				t.Errorf("Broadcast = %s, want %s", got, tt.wantBroadcast)
			}
		})
	}
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/31"), netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::/64")} {
		if g := Gateway(bad); g.IsValid() {
			t.Errorf("Gateway(%s) = %s, want the zero Addr", bad, g)
		}
		if g := GatewayPrefix(bad); g.IsValid() {
			t.Errorf("GatewayPrefix(%s) = %s, want the zero Prefix", bad, g)
		}
	}
}

func TestAllocateIP(t *testing.T) {
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	var full []netip.Addr
	for a := netip.MustParseAddr("172.30.0.2"); a != netip.MustParseAddr("172.30.0.255"); a = a.Next() {
		full = append(full, a)
	}
	tests := []struct {
		name    string
		subnet  netip.Prefix
		used    []netip.Addr
		want    string
		wantErr error // nil: success; errExhausted or errAny
	}{
		{name: "empty", subnet: subnet, used: nil, want: "172.30.0.2"},
		{name: "gateway in used is harmless", subnet: subnet, used: addrs("172.30.0.1"), want: "172.30.0.2"},
		{name: "lowest free", subnet: subnet, used: addrs("172.30.0.2", "172.30.0.3", "172.30.0.5"), want: "172.30.0.4"},
		{name: "order of used irrelevant", subnet: subnet, used: addrs("172.30.0.3", "172.30.0.2"), want: "172.30.0.4"},
		{name: "outside addresses ignored", subnet: subnet, used: addrs("10.0.0.2", "172.31.0.2"), want: "172.30.0.2"},
		{name: "ipv4-mapped used counts", subnet: subnet, used: addrs("::ffff:172.30.0.2"), want: "172.30.0.3"},
		{name: "unmasked subnet", subnet: netip.MustParsePrefix("172.30.0.77/24"), used: nil, want: "172.30.0.2"},
		{name: "last one", subnet: subnet, used: full[:len(full)-1], want: "172.30.0.254"},
		{name: "full", subnet: subnet, used: full, wantErr: ErrExhausted},
		{name: "slash 30 has one guest", subnet: netip.MustParsePrefix("10.0.0.0/30"), used: nil, want: "10.0.0.2"},
		{name: "slash 30 full", subnet: netip.MustParsePrefix("10.0.0.0/30"), used: addrs("10.0.0.2"), wantErr: ErrExhausted},
		{name: "slash 31 refused", subnet: netip.MustParsePrefix("10.0.0.0/31"), wantErr: errAny},
		{name: "ipv6 refused", subnet: netip.MustParsePrefix("fd00::/64"), wantErr: errAny},
		{name: "invalid refused", subnet: netip.Prefix{}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AllocateIP(tt.subnet, tt.used)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("AllocateIP: %v", err)
			case tt.wantErr == nil && got.String() != tt.want:
				t.Errorf("AllocateIP = %s, want %s", got, tt.want)
			case tt.wantErr != nil && err == nil:
				t.Errorf("AllocateIP = %s, want an error", got)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("AllocateIP error %v, want one wrapping %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")
