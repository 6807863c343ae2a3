package drivers

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestChooseDefault(t *testing.T) {
	missing := errors.New("firecracker not found")
	for _, tc := range []struct {
		configured string
		fcErr      error
		accel      string
		want       string
	}{
		{"", nil, "kvm", "firecracker"},
		{"", nil, "tcg", "qemu"},
		{"", missing, "kvm", "qemu"},
		{"qemu", nil, "kvm", "qemu"},
		{"firecracker", missing, "tcg", "firecracker"},
	} {
		if got, _ := chooseDefault(tc.configured, tc.fcErr, tc.accel, "qemu", "firecracker"); got != tc.want {
			t.Errorf("chooseDefault(%q, %v, %q) = %q, want %q", tc.configured, tc.fcErr, tc.accel, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rt := t.TempDir()
	s := Load(Options{RuntimeDir: rt, Accel: "kvm"})
	if len(s.Drivers) != 2 || s.Drivers["qemu"] == nil || s.Drivers["firecracker"] == nil {
		t.Fatalf("drivers = %v", s.Drivers)
	}
	if s.Default != "qemu" || s.Why == "" {
		t.Errorf("without firecracker: default %q (%s)", s.Default, s.Why)
	}
	fc := filepath.Join(rt, "firecracker", "firecracker")
	os.MkdirAll(filepath.Dir(fc), 0o755)
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	if s := Load(Options{RuntimeDir: rt, Accel: "kvm"}); s.Default != "firecracker" {
		t.Errorf("with firecracker in the bundle and kvm: default %q (%s)", s.Default, s.Why)
	}
}
