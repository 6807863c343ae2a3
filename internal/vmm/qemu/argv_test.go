package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestArgvGolden(t *testing.T) {
	full := vmm.Spec{
		ID:          "dev-1",
		Name:        "dev",
		Dir:         "/home/u/.local/state/banger/vms/dev-1",
		CPUs:        2,
		MemoryMiB:   1024,
		Kernel:      "/opt/banger/kernel/vmlinux",
		Initrd:      "/opt/banger/kernel/initrd.img",
		KernelArgs:  "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
		Disk:        "/home/u/.local/state/banger/vms/dev-1/root.ext4",
		TAP:         "bgtap0",
		MAC:         "52:54:00:12:34:56",
		ConsoleLog:  "/home/u/.local/state/banger/vms/dev-1/console.log",
		Accel:       "kvm",
		AgentSocket: "/run/user/1000/banger/dev-1.agent.sock",
	}
	tcgFull := full
	tcgFull.Accel = "tcg"
	minimal := vmm.Spec{
		ID:         "m",
		Dir:        "/tmp/vm",
		CPUs:       1,
		MemoryMiB:  256,
		Kernel:     "/k/vmlinux",
		KernelArgs: "console=ttyS0",
		ConsoleLog: "/tmp/vm/console.log",
		Accel:      "tcg",
	}
	commas := minimal
	commas.Dir = "/tmp/a,b"
	commas.ConsoleLog = "/tmp/a,b/console,log"
	commas.Disk = "/tmp/a,b/root,disk"
	commas.AgentSocket = "/tmp/a,b/agent,sock"
	tests := []struct {
		name string
		spec vmm.Spec
	}{
		{"full-kvm", full},
		{"full-tcg", tcgFull},
		{"minimal-tcg", minimal},
		{"comma-paths", commas},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(Argv("/usr/bin/qemu-system-x86_64", tt.spec), "\n") + "\n"
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Argv mismatch for %s (go test -update rewrites it)\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

func TestArgvOmitsEmptyParts(t *testing.T) {
	a := strings.Join(Argv("qemu", vmm.Spec{ID: "x", Dir: "/d", Accel: "tcg", CPUs: 1, MemoryMiB: 128}), " ")
	for _, s := range []string{"-initrd", "-netdev", "virtio-net", "-drive", "virtio-blk", "virtio-serial", "agent"} {
		if strings.Contains(a, s) {
			t.Errorf("argv without %s fields contains %q: %s", s, s, a)
		}
	}
	for _, s := range []string{"-daemonize", "-pidfile /d/qemu.pid", "path=/d/qmp.sock", "-no-reboot", "-cpu max"} {
		if !strings.Contains(a, s) {
			t.Errorf("argv lacks %q: %s", s, a)
		}
	}
}

func TestWithTSCHint(t *testing.T) {
	tests := []struct {
		args, extra string
		want        string
	}{
		{"console=ttyS0", "tsc_early_khz=2500000", "console=ttyS0 tsc_early_khz=2500000"},
		{"console=ttyS0", "tsc_early_khz=2500000 tsc=reliable", "console=ttyS0 tsc_early_khz=2500000 tsc=reliable"},
		{"", "tsc_early_khz=1000", "tsc_early_khz=1000"},
		{"a ", "tsc_early_khz=1000", "a tsc_early_khz=1000"},
		{"console=ttyS0 tsc_early_khz=42", "tsc_early_khz=2500000", "console=ttyS0 tsc_early_khz=42"},
		{"tsc_early_khz=42", "tsc_early_khz=7", "tsc_early_khz=42"},
		{"foo_tsc_early_khz=1", "tsc_early_khz=7", "foo_tsc_early_khz=1 tsc_early_khz=7"},
		{"console=ttyS0", "", "console=ttyS0"},
	}
	for _, tt := range tests {
		if got := withTSCHint(tt.args, tt.extra); got != tt.want {
			t.Errorf("withTSCHint(%q, %q) = %q, want %q", tt.args, tt.extra, got, tt.want)
		}
	}
}

func TestHostTSCKHz(t *testing.T) {
	khz, err := hostTSCKHz()
	if err != nil {
		testhost.Skip(t, "no usable host TSC: %v", err)
	}
	// Any x86 CPU of the last two decades: 500 MHz .. 10 GHz.
	if khz < 500_000 || khz > 10_000_000 {
		t.Fatalf("host TSC %d kHz is implausible", khz)
	}
	t.Logf("host TSC: %d kHz", khz)
}
