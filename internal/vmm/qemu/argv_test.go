package qemu

import (
	"flag"
	"fmt"
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
		ID:         "dev-1",
		Name:       "dev",
		Dir:        "/home/u/.local/state/banger/vms/dev-1",
		CPUs:       2,
		MemoryMiB:  1024,
		Kernel:     "/opt/banger/kernel/vmlinux",
		Initrd:     "/opt/banger/kernel/initrd.img",
		KernelArgs: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
		Disk:       "/home/u/.local/state/banger/vms/dev-1/root.ext4",
		TAP:        "bgtap0",
		MAC:        "52:54:00:12:34:56",
		ConsoleLog: "/home/u/.local/state/banger/vms/dev-1/console.log",
		Accel:      "kvm",
		Agent:      true,
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
	commas.Agent = true
	template := tcgFull
	template.TAP, template.DetachedNIC = "", true
	template.MemoryFile, template.MemoryShared = "/proc/42/fd/7", true
	clone := tcgFull
	clone.MemoryFile = "/proc/42/fd/8"
	clone.IncomingState = "/home/u/.local/state/banger/templates/k/state"
	overlayClone := clone
	overlayClone.Disk = "/home/u/.local/state/banger/vms/dev-1/disk.qcow2"
	overlayClone.DiskBacking = "/home/u/.local/state/banger/templates/k/disk.ext4"
	tests := []struct {
		name string
		spec vmm.Spec
	}{
		{"template", template},
		{"clone", clone},
		{"overlay-clone", overlayClone},
		{"full-kvm", full},
		{"full-tcg", tcgFull},
		{"minimal-tcg", minimal},
		{"comma-paths", commas},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, files := Argv("/usr/bin/qemu-system-x86_64", tt.spec)
			got := strings.Join(argv, "\n") + "\n--- descriptors ---\n"
			for _, f := range files {
				got += f.String() + "\n"
			}
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
	argv, files := Argv("qemu", vmm.Spec{ID: "x", Dir: "/d", Accel: "tcg", CPUs: 1, MemoryMiB: 128, ConsoleLog: "/d/c", Kernel: "/k"})
	a := strings.Join(argv, " ")
	for _, s := range []string{"-initrd", "-netdev", "virtio-net", "-drive", "virtio-blk", "virtio-serial", "agent", "-daemonize", "-pidfile", "-runas"} {
		if strings.Contains(a, s) {
			t.Errorf("argv without %s fields contains %q: %s", s, s, a)
		}
	}
	for _, s := range []string{"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-add-fd fd=3,set=1 -chardev file,id=con0,path=/dev/fdset/1,append=on", "-kernel /proc/self/fd/4",
		"socket,id=qmp,fd=5,server=on,wait=off", "-no-reboot", "-cpu max"} {
		if !strings.Contains(a, s) {
			t.Errorf("argv lacks %q: %s", s, a)
		}
	}
	want := []File{{3, "/d/c", HowAppend}, {4, "/k", HowRead}, {5, "/d/qmp.sock", HowListen}}
	if fmt.Sprint(files) != fmt.Sprint(want) {
		t.Errorf("files = %v, want %v", files, want)
	}
	// No path reaches QEMU's command line: it opens nothing by name.
	for _, p := range []string{"/d/", "/k"} {
		if strings.Contains(a, p) {
			t.Errorf("argv names %s: %s", p, a)
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

// TestInvariantTSC: CPUID's invariant TSC bit, which decides tsc=reliable
// where /proc/cpuinfo cannot be read, agrees with the kernel's flags.
func TestInvariantTSC(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !haveTSC {
		testhost.Skip(t, "no /proc/cpuinfo or no TSC here: %v", err)
	}
	flags := string(b)
	kernel := strings.Contains(flags, " constant_tsc") && strings.Contains(flags, " nonstop_tsc")
	if got := invariantTSC(); got != kernel {
		t.Fatalf("CPUID says invariant TSC %v; the kernel's flags constant_tsc and nonstop_tsc: %v", got, kernel)
	}
}
