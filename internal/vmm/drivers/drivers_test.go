package drivers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/vmm/firecracker"
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

// TestLoadSimulator: with a Firecracker simulator named, the firecracker
// driver runs it (and says so), and it never becomes the default, even
// where a real Firecracker and KVM would make Firecracker the default.
func TestLoadSimulator(t *testing.T) {
	rt := t.TempDir()
	fc := filepath.Join(rt, "firecracker", "firecracker")
	os.MkdirAll(filepath.Dir(fc), 0o755)
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	sim := filepath.Join(t.TempDir(), "firecracker-simulator")
	os.WriteFile(sim, []byte("#!/bin/sh\n"), 0o755)
	s := Load(Options{RuntimeDir: rt, Accel: "kvm", FirecrackerSimulator: sim})
	d, ok := s.Drivers["firecracker"].(*firecracker.Driver)
	if !ok || !d.Simulated() {
		t.Fatalf("firecracker driver %T is not the simulator's", s.Drivers["firecracker"])
	}
	if bin, _ := d.Binary(); bin != sim {
		t.Errorf("driver runs %q, want the simulator", bin)
	}
	if s.Default != "qemu" || !strings.Contains(s.Why, "simulator") {
		t.Errorf("default %q (%s), want qemu because firecracker is simulated", s.Default, s.Why)
	}
	if p := d.PreflightPurpose(); p != "vm-start" {
		t.Errorf("simulator's preflight purpose %q, want vm-start (it needs no KVM)", p)
	}
}

// TestLoadJailer: the firecracker driver launches through the bundle's
// jailer (with its chroots under ChrootBase); the Firecracker simulator
// only through the jailer simulator, never a real jailer; no chroot base,
// no jailer.
func TestLoadJailer(t *testing.T) {
	rt := t.TempDir()
	for _, f := range []string{"firecracker", "jailer"} {
		p := filepath.Join(rt, "firecracker", f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	}
	jailerOf := func(o Options) string { return Load(o).Drivers["firecracker"].(*firecracker.Driver).Jailer() }
	if j := jailerOf(Options{RuntimeDir: rt, ChrootBase: "/state/jailer"}); j != filepath.Join(rt, "firecracker", "jailer") {
		t.Errorf("jailer %q, want the bundle's", j)
	}
	if j := jailerOf(Options{RuntimeDir: rt}); j != "" {
		t.Errorf("jailer %q without a chroot base", j)
	}
	sim := filepath.Join(t.TempDir(), "firecracker-simulator")
	os.WriteFile(sim, []byte("#!/bin/sh\n"), 0o755)
	if j := jailerOf(Options{RuntimeDir: rt, ChrootBase: "/s", FirecrackerSimulator: sim}); j != "" {
		t.Errorf("the simulator is jailed by %q, want unjailed without a jailer simulator", j)
	}
	if j := jailerOf(Options{RuntimeDir: rt, ChrootBase: "/s", FirecrackerSimulator: sim, JailerSimulator: "/js"}); j != "/js" {
		t.Errorf("the simulator is jailed by %q, want the jailer simulator", j)
	}
}
