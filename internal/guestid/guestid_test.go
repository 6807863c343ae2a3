package guestid

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

func TestHostsWithName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "127.0.1.1\tnew\n"},
		{"127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n"},
		{"127.0.0.1 localhost\n127.0.1.1 template\n::1 ip6\n", "127.0.0.1 localhost\n127.0.1.1\tnew\n::1 ip6\n"},
		{"127.0.1.1 a\n127.0.1.1 b", "127.0.1.1\tnew\n"},
		{"# no newline at the end", "# no newline at the end\n127.0.1.1\tnew\n"},
	} {
		if got := string(HostsWithName([]byte(tc.in), "new")); got != tc.want {
			t.Errorf("HostsWithName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGARP(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:12:34:56")
	f := GARP(hw, net.ParseIP("172.30.0.7"))
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1,
		0x52, 0x54, 0, 0x12, 0x34, 0x56, 172, 30, 0, 7,
		0, 0, 0, 0, 0, 0, 172, 30, 0, 7,
	}
	if !bytes.Equal(f, want) {
		t.Errorf("GARP = % x\nwant   % x", f, want)
	}
}

func validParams() IdentityParams {
	return IdentityParams{
		Hostname: "dev", MachineID: strings.Repeat("ab", 16), MAC: "52:54:00:12:34:56",
		Address: "172.30.0.7/24", Gateway: "172.30.0.1", DNS: "1.1.1.1",
		HostKey:    "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
		HostKeyPub: "ssh-ed25519 AAAA root@dev", Entropy: make([]byte, 64),
	}
}

func TestCheck(t *testing.T) {
	if err := validParams().Check(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	for name, mod := range map[string]func(*IdentityParams){
		"hostname":   func(p *IdentityParams) { p.Hostname = "Bad_Name" },
		"machine id": func(p *IdentityParams) { p.MachineID = "xyz" },
		"mac":        func(p *IdentityParams) { p.MAC = "nope" },
		"address":    func(p *IdentityParams) { p.Address = "172.30.0.7" },
		"gateway":    func(p *IdentityParams) { p.Gateway = "gw" },
		"host key":   func(p *IdentityParams) { p.HostKey = "" },
		"entropy":    func(p *IdentityParams) { p.Entropy = make([]byte, 8) },
	} {
		p := validParams()
		mod(&p)
		if err := p.Check(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Check() = %v, want an error naming it", name, err)
		}
	}
}
