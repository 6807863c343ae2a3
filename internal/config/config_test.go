package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if c, err := Load(filepath.Join(dir, "missing.toml")); err != nil || !c.RemindAfterSSH() {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte("[vmm]\naccel = \"tcg\"\n[ssh]\nremind = false\n[network]\nsubnet = \"10.9.0.0/24\"\n"), 0o600)
	c, err := Load(p)
	if err != nil || c.VMM.Accel != "tcg" || c.RemindAfterSSH() || c.Network.Subnet != "10.9.0.0/24" {
		t.Fatalf("got %+v, %v", c, err)
	}
	for body, want := range map[string]string{
		"[vmm]\naccel = \"fast\"\n": `vmm.accel = "fast"`,
		"[vmm]\nacel = \"tcg\"\n":   "acel",
		"not toml at all = = \n":    "config.toml",
	} {
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q) = %v, want error mentioning %q", body, err, want)
		}
	}
}
