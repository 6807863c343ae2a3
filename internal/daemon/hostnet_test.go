package daemon

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/network"
)

func TestGuestPolicy(t *testing.T) {
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	no := false
	for _, tt := range []struct {
		name string
		cfg  config.Network
		want network.Policy
	}{
		{"defaults", config.Network{}, network.Policy{Bridge: "br", Subnet: subnet}},
		{"every key", config.Network{HostPorts: []any{int64(22), "8080/udp", "8080", "53/udp"}, IsolateVMs: true, Private: &no},
			network.Policy{Bridge: "br", Subnet: subnet, HostTCPPorts: []uint16{22, 8080}, HostUDPPorts: []uint16{8080, 53},
				IsolateVMs: true, DenyPrivate: true}},
	} {
		if got := guestPolicy(tt.cfg, "br", subnet); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: guestPolicy = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
