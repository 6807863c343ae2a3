package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if c, err := Load(filepath.Join(dir, "missing.toml")); err != nil || !c.RemindAfterSSH() {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte("[vmm]\naccel = \"tcg\"\n[ssh]\nremind = false\n[network]\nsubnet = \"10.9.0.0/24\"\n[image]\nmax_size = \"8G\"\nmax_files = 1000\n"), 0o600)
	c, err := Load(p)
	if err != nil || c.VMM.Accel != "tcg" || c.RemindAfterSSH() || c.Network.Subnet != "10.9.0.0/24" ||
		c.Image.MaxSize != "8G" || c.Image.MaxFiles != 1000 {
		t.Fatalf("got %+v, %v", c, err)
	}
	for body, want := range map[string]string{
		"[vmm]\naccel = \"fast\"\n":      `vmm.accel = "fast"`,
		"[vmm]\nacel = \"tcg\"\n":        "acel",
		"not toml at all = = \n":         "config.toml",
		"[image]\nmax_size = \"lots\"\n": "image.max_size",
		"[image]\nmax_files = -1\n":      "image.max_files",
	} {
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q) = %v, want error mentioning %q", body, err, want)
		}
	}
}

func TestNetworkPolicyKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	load := func(body string) (Config, error) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}

	c, err := load("[network]\n")
	if err != nil {
		t.Fatal(err)
	}
	if ports, _ := c.Network.GuestHostPorts(); len(ports) != 0 || c.Network.IsolateVMs || !c.Network.AllowPrivate() {
		t.Errorf("defaults: ports %v, isolate_vms %v, private %v; want none, false, true", ports, c.Network.IsolateVMs, c.Network.AllowPrivate())
	}

	c, err = load(`[network]
host_ports = [22, "8080/udp", "8080/tcp", "53", 22]
isolate_vms = true
private = false
`)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := c.Network.GuestHostPorts()
	want := []HostPort{{22, "tcp"}, {8080, "udp"}, {8080, "tcp"}, {53, "tcp"}}
	if err != nil || !slices.Equal(ports, want) {
		t.Errorf("GuestHostPorts = %v, %v; want %v", ports, err, want)
	}
	if !c.Network.IsolateVMs || c.Network.AllowPrivate() {
		t.Errorf("isolate_vms %v, private %v; want true, false", c.Network.IsolateVMs, c.Network.AllowPrivate())
	}

	for _, tt := range []struct{ value, shown string }{
		{`0`, "[0] = 0:"},
		{`65536`, "[0] = 65536:"},
		{`-1`, "[0] = -1:"},
		{`"22/sctp"`, `[0] = "22/sctp":`},
		{`"ssh"`, `[0] = "ssh":`},
		{`"22/"`, `[0] = "22/":`},
		{`"/tcp"`, `[0] = "/tcp":`},
		{`" 22"`, `[0] = " 22":`},
		{`22.5`, "[0] = 22.5:"},
		{`true`, "[0] = true:"},
		{`[22]`, "[0] = [22]:"},
	} {
		_, err := load("[network]\nhost_ports = [" + tt.value + "]\n")
		if err == nil || !strings.Contains(err.Error(), "network.host_ports"+tt.shown) || !strings.Contains(err.Error(), `"PORT/udp"`) ||
			!strings.Contains(err.Error(), p) {
			t.Errorf("host_ports = [%s]: %v, want an error naming network.host_ports%s, the file and the accepted forms", tt.value, err, tt.shown)
		}
	}
	if _, err := load("[network]\nhost_ports = [22, \"x\"]\n"); err == nil || !strings.Contains(err.Error(), `network.host_ports[1] = "x"`) {
		t.Errorf("the second entry bad: %v, want it named", err)
	}
	if _, err := load("[network]\nprivate = \"no\"\n"); err == nil {
		t.Error("private = \"no\" accepted, want an error")
	}
}
