package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
)

func TestProbeAccelTCG(t *testing.T) {
	bin := qemuBinary(t)
	kernel, initrd := runtimeKernel(t)
	const timeout = 60 * time.Second
	t0 := time.Now()
	o, err := ProbeAccel(context.Background(), bin, "tcg", kernel, initrd, timeout)
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tcg probe: ok=%v in %v (took %v)", o.OK, took.Round(time.Millisecond), o.Took.Round(time.Millisecond))
	if !o.OK || o.Why() != "" || o.QEMUError != "" {
		t.Fatalf("tcg probe failed (%s); console tail:\n%s", o.Why(), o.ConsoleTail)
	}
	if !strings.Contains(o.ConsoleTail, ProbeMarker) {
		t.Errorf("ok but the console tail lacks the marker:\n%s", o.ConsoleTail)
	}
}

func TestProbeAccelKVM(t *testing.T) {
	bin := qemuBinary(t)
	kernel, initrd := runtimeKernel(t)
	if err := openKVM("/dev/kvm"); err != nil {
		testhost.SkipHardware(t, "no usable KVM device: %v", err)
	}
	// Where KVM works this passes in about a second; on the nested build
	// machines KVM guests hang, and the probe must give up on time.
	const timeout = 5 * time.Second
	t0 := time.Now()
	o, err := ProbeAccel(context.Background(), bin, "kvm", kernel, initrd, timeout)
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kvm probe: ok=%v in %v (%s); console tail:\n%s", o.OK, took.Round(time.Millisecond), o.Why(), lastLines(o.ConsoleTail, 600))
	if took > timeout+3*time.Second {
		t.Errorf("probe took %v, timeout %v", took, timeout)
	}
	if o.OK != strings.Contains(o.ConsoleTail, ProbeMarker) {
		t.Errorf("ok=%v inconsistent with the console tail:\n%s", o.OK, o.ConsoleTail)
	}
}

func TestProbeAccelErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := ProbeAccel(ctx, "", "hvf", "/k", "", time.Second); err == nil || !strings.Contains(err.Error(), "hvf") {
		t.Errorf("bad accel: %v", err)
	}
	bin := qemuBinary(t)
	if _, err := ProbeAccel(ctx, bin, "tcg", "/nonexistent/vmlinux", "", time.Second); err == nil || !strings.Contains(err.Error(), "/nonexistent/vmlinux") {
		t.Errorf("missing kernel: %v", err)
	}
	// A kernel QEMU cannot load: QEMU fails, which is an answer (OK
	// false), with QEMU's own error.
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("not a kernel"), 0o644)
	o, err := ProbeAccel(ctx, bin, "tcg", junk, "", 10*time.Second)
	if err != nil || o.OK || o.QEMUError == "" || !strings.HasPrefix(o.Why(), "qemu failed: ") {
		t.Errorf("junk kernel: %+v, %v (why %q)", o, err, o.Why())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	kernel, initrd := runtimeKernel(t)
	if _, err := ProbeAccel(cctx, bin, "tcg", kernel, initrd, 10*time.Second); err == nil {
		t.Error("canceled context: no error")
	}
}

// fakeFiles makes stand-ins for the QEMU binary, kernel and KVM device, for
// tests of the decision logic that need no real boot.
func fakeFiles(t *testing.T) (bin, kernel, dev string) {
	dir := t.TempDir()
	bin, kernel, dev = filepath.Join(dir, "qemu"), filepath.Join(dir, "vmlinux"), filepath.Join(dir, "kvm")
	for _, p := range []string{bin, kernel, dev} {
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin, kernel, dev
}

func TestResolveAccelOverride(t *testing.T) {
	ctx := context.Background()
	bin, kernel, dev := fakeFiles(t)
	tests := []struct {
		override, dev string
		want          string
		wantErr       string
	}{
		{override: "tcg", dev: "/nonexistent", want: "tcg"},
		{override: "kvm", dev: dev, want: "kvm"},
		{override: "kvm", dev: "/nonexistent/kvm", wantErr: "/nonexistent/kvm does not exist"},
		{override: "KVM", dev: dev, wantErr: `invalid accelerator "KVM"`},
		{override: "hvf", dev: dev, wantErr: "BANGER_ACCEL"},
	}
	for _, tt := range tests {
		t.Run(tt.override+tt.dev, func(t *testing.T) {
			c, err := ResolveAccel(ctx, AccelOptions{Override: tt.override, Binary: bin, Kernel: kernel, KVMDevice: tt.dev})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c.Accel != tt.want || c.Probed {
				t.Fatalf("ResolveAccel = %+v, %v; want %s without a probe", c, err, tt.want)
			}
		})
	}
}

func TestResolveAccelAuto(t *testing.T) {
	ctx := context.Background()
	bin, kernel, dev := fakeFiles(t)

	c, err := ResolveAccel(ctx, AccelOptions{Binary: bin, Kernel: kernel, KVMDevice: "/nonexistent/kvm"})
	if err != nil || c.Accel != "tcg" || c.Probed || !strings.Contains(c.Reason, "does not exist") {
		t.Fatalf("no device: %+v, %v", c, err)
	}
	noAccess := filepath.Join(t.TempDir(), "kvm-ro")
	os.WriteFile(noAccess, nil, 0o000)
	if os.Geteuid() != 0 {
		c, err = ResolveAccel(ctx, AccelOptions{Binary: bin, Kernel: kernel, KVMDevice: noAccess})
		if err != nil || c.Accel != "tcg" || !strings.Contains(c.Reason, "usermod -aG kvm") {
			t.Fatalf("unreadable device: %+v, %v", c, err)
		}
	}

	// A device the VMMs' user cannot open means TCG, with the fix.
	if os.Geteuid() == 0 {
		closed := filepath.Join(t.TempDir(), "kvm-root")
		os.WriteFile(closed, nil, 0o600)
		c, err = ResolveAccel(ctx, AccelOptions{Binary: bin, Kernel: kernel, KVMDevice: closed, RunAs: &vmm.Identity{UID: 4242, GID: 4242}})
		if err != nil || c.Accel != "tcg" || c.Probed || !strings.Contains(c.Reason, "cannot open "+closed) || !strings.Contains(c.Reason, "fix: ") {
			t.Fatalf("device closed to the vmm user: %+v, %v", c, err)
		}
	}

	// Cached results decide without a probe (the fake binary could not run one).
	cache := NewProbeCache(filepath.Join(t.TempDir(), "sub", "probe.json"))
	key, err := CurrentProbeKey(bin, kernel, "", "kvm")
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []bool{true, false} {
		if err := cache.Put(ProbeResult{Key: key, ProbeOutcome: ProbeOutcome{OK: ok}, ProbedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		c, err := ResolveAccel(ctx, AccelOptions{Binary: bin, Kernel: kernel, KVMDevice: dev, Cache: cache.Path()})
		want := map[bool]string{true: "kvm", false: "tcg"}[ok]
		if err != nil || c.Accel != want || !c.Cached || !c.Probed {
			t.Fatalf("cached ok=%v: %+v, %v", ok, c, err)
		}
	}

	// A changed kernel invalidates the entry: a real probe runs, and with a
	// fake QEMU binary that cannot even execute it falls back to tcg.
	later := time.Now().Add(time.Hour)
	os.Chtimes(kernel, later, later)
	c, err = ResolveAccel(ctx, AccelOptions{Binary: bin, Kernel: kernel, KVMDevice: dev, Cache: cache.Path()})
	if err != nil || c.Accel != "tcg" || c.Cached {
		t.Fatalf("after kernel change: %+v, %v", c, err)
	}
	t.Logf("reason: %s", c.Reason)

	c, err = ResolveAccel(ctx, AccelOptions{Binary: bin, KVMDevice: dev})
	if err != nil || c.Accel != "tcg" || !strings.Contains(c.Reason, "no runtime kernel") {
		t.Fatalf("no kernel: %+v, %v", c, err)
	}
}

// TestResolveAccelRealProbe runs the automatic choice end to end and
// checks that the result is cached.
func TestResolveAccelRealProbe(t *testing.T) {
	bin := qemuBinary(t)
	kernel, initrd := runtimeKernel(t)
	if err := openKVM("/dev/kvm"); err != nil {
		testhost.SkipHardware(t, "no usable KVM device: %v", err)
	}
	cache := NewProbeCache(filepath.Join(t.TempDir(), "probe.json"))
	opts := AccelOptions{Binary: bin, Kernel: kernel, Initrd: initrd, Cache: cache.Path(), ProbeTimeout: 5 * time.Second}
	t0 := time.Now()
	c, err := ResolveAccel(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first: %+v in %v", c, time.Since(t0).Round(time.Millisecond))
	if !c.Probed || c.Cached {
		t.Fatalf("first call did not probe: %+v", c)
	}
	t0 = time.Now()
	c2, err := ResolveAccel(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second: %+v in %v", c2, time.Since(t0).Round(time.Millisecond))
	if !c2.Cached || c2.Accel != c.Accel {
		t.Fatalf("second call not served from cache: %+v", c2)
	}
}

func TestProbeCache(t *testing.T) {
	bin, kernel, _ := fakeFiles(t)
	path := filepath.Join(t.TempDir(), "probe.json")
	c := NewProbeCache(path)
	kvm, err := CurrentProbeKey(bin, kernel, "", "kvm")
	if err != nil {
		t.Fatal(err)
	}
	tcg := kvm
	tcg.Accel = "tcg"
	if _, ok := c.Get(kvm); ok {
		t.Fatal("hit in a missing file")
	}
	if err := c.Put(ProbeResult{Key: kvm, ProbeOutcome: ProbeOutcome{OK: false, ConsoleTail: "hang", Took: time.Second}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ProbeResult{Key: tcg, ProbeOutcome: ProbeOutcome{OK: true}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ProbeResult{Key: kvm, ProbeOutcome: ProbeOutcome{OK: true}}); err != nil { // replaces
		t.Fatal(err)
	}
	if r, ok := c.Get(kvm); !ok || !r.OK {
		t.Fatalf("kvm: %+v %v", r, ok)
	}
	if r, ok := c.Get(tcg); !ok || !r.OK {
		t.Fatalf("tcg: %+v %v", r, ok)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", fi, err)
	}
	b, _ := os.ReadFile(path)
	if strings.Count(string(b), `"accel": "kvm"`) != 1 {
		t.Errorf("kvm result not replaced:\n%s", b)
	}
	// Same file from another instance (a restarted daemon).
	if _, ok := NewProbeCache(path).Get(kvm); !ok {
		t.Error("miss from a second instance")
	}
	// Any change of the inputs is a miss.
	for name, mod := range map[string]func(*ProbeKey){
		"host kernel": func(k *ProbeKey) { k.HostKernel += "+1" },
		"qemu mtime":  func(k *ProbeKey) { k.QEMUModTime = k.QEMUModTime.Add(time.Second) },
		"kernel path": func(k *ProbeKey) { k.Kernel += "2" },
		"initrd":      func(k *ProbeKey) { k.Initrd = "/x" },
	} {
		k := kvm
		mod(&k)
		if _, ok := c.Get(k); ok {
			t.Errorf("changed %s still hits", name)
		}
	}
	// A corrupt file is a miss and gets overwritten.
	os.WriteFile(path, []byte("{"), 0o600)
	if _, ok := c.Get(kvm); ok {
		t.Error("hit in a corrupt file")
	}
	if err := c.Put(ProbeResult{Key: kvm, ProbeOutcome: ProbeOutcome{OK: true}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(kvm); !ok {
		t.Error("miss after rewriting a corrupt file")
	}
}
