package doctor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// fakeFirecracker writes a shell script named firecracker that stands in
// for the Firecracker binary: it prints what `firecracker --version` prints.
func fakeFirecracker(t *testing.T, path string) string {
	return writeScript(t, path, `echo "Firecracker v1.16.1"`)
}

// fakeQEMU writes a shell script named qemu-system-x86_64 standing in for
// QEMU: --version prints a version line; any other invocation is a probe
// boot, which it records in calls and answers by writing the probe marker
// to the console descriptor named on its command line (-add-fd of set 1),
// as the runtime initramfs does under a working accelerator.
func fakeQEMU(t *testing.T, dir, calls string) string {
	return writeScript(t, filepath.Join(dir, "qemu-system-x86_64"), `
if [ "$1" = "--version" ]; then
	echo "QEMU emulator version 7.2.22 (stand-in for tests)"
	echo "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"
	exit 0
fi
echo "$*" >> '`+calls+`'
for a in "$@"; do
	case "$a" in
	fd=*,set=1) fd=${a#fd=}; fd=${fd%,set=1} ;;
	esac
done
eval 'echo "`+qemu.ProbeMarker+`" >&'"$fd"
`)
}

func TestQEMU(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		f := newFixture(t)
		r := f.run(t, IDQEMU)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "qemu-system-x86_64 not found")
		wantContains(t, "fix", r.Fix, "sudo apt-get install qemu-system-x86")
	})
	t.Run("present", func(t *testing.T) {
		f := newFixture(t)
		p := fakeQEMU(t, f.bin, filepath.Join(f.root, "calls"))
		r := f.run(t, IDQEMU)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "QEMU emulator version 7.2.22", p)
	})
	t.Run("configured path that is missing", func(t *testing.T) {
		f := newFixture(t)
		f.env.Config.VMM.QEMU = filepath.Join(f.root, "nowhere", "qemu")
		r := f.run(t, IDQEMU)
		wantStatus(t, r, StatusFail)
		wantContains(t, "fix", r.Fix, "vmm.qemu")
	})
	t.Run("broken", func(t *testing.T) {
		f := newFixture(t)
		writeScript(t, filepath.Join(f.bin, "qemu-system-x86_64"), `echo "error while loading shared libraries" >&2; exit 127`)
		r := f.run(t, IDQEMU)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "does not run", "shared libraries")
		wantContains(t, "fix", r.Fix, "--reinstall")
	})
}

func TestFirecracker(t *testing.T) {
	t.Run("absent", func(t *testing.T) {
		f := newFixture(t)
		r := f.run(t, IDFirecracker)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "firecracker not found in "+filepath.Join(f.rt, "firecracker")+" or $PATH",
			"KVM cannot run guests here", f.env.DevKVM+" does not exist", "banger uses QEMU")
		wantContains(t, "fix", r.Fix, "firecracker-v1.16.1-x86_64.tgz", filepath.Join(f.rt, "firecracker", "firecracker"))
	})
	t.Run("in PATH", func(t *testing.T) {
		f := newFixture(t)
		p := fakeFirecracker(t, filepath.Join(f.bin, "firecracker"))
		f.env.DevKVM = "/dev/null" // openable; whether KVM runs guests stays unknown
		r := f.run(t, IDFirecracker)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "Firecracker v1.16.1 at "+p, "unknown")
	})
	t.Run("bundle before PATH", func(t *testing.T) {
		f := newFixture(t)
		writeScript(t, filepath.Join(f.bin, "firecracker"), `echo "Firecracker v1.0.0"`)
		p := fakeFirecracker(t, filepath.Join(f.rt, "firecracker", "firecracker"))
		f.env.DevKVM = "/dev/null"
		r := f.run(t, IDFirecracker)
		wantContains(t, "detail", r.Detail, "Firecracker v1.16.1 at "+p)
	})
	t.Run("present but no KVM", func(t *testing.T) {
		f := newFixture(t)
		fakeFirecracker(t, filepath.Join(f.bin, "firecracker"))
		r := f.run(t, IDFirecracker)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "Firecracker v1.16.1", "but KVM cannot run guests here", "banger uses QEMU")
	})
	t.Run("broken binary", func(t *testing.T) {
		f := newFixture(t)
		writeScript(t, filepath.Join(f.bin, "firecracker"), "exit 153")
		r := f.run(t, IDFirecracker)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "does not run", "banger uses QEMU")
	})
	t.Run("required by config", func(t *testing.T) {
		f := newFixture(t)
		f.env.Config.VMM.Default = "firecracker"
		r := f.run(t, IDFirecracker)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, `vmm.default = "firecracker"`)
		wantContains(t, "fix", r.Fix, "remove vmm.default")
	})
}

// TestFirecrackerOnThisHost runs the firecracker check against this
// machine as it is: Firecracker cannot be installed on the build machines,
// so the check must report it missing and say why banger uses QEMU.
func TestFirecrackerOnThisHost(t *testing.T) {
	if p, err := exec.LookPath("firecracker"); err == nil {
		testhost.SkipHardware(t, "firecracker is installed here (%s): this test is for hosts without it", p)
	}
	// A private probe cache; everything else is this host's.
	env := NewEnv(paths.Dirs{State: t.TempDir()}, config.Config{})
	// The repository's runtime bundle, when built, lets the check say
	// whether KVM can run guests (a probe boot of up to 15 s; not with
	// -short).
	if rt, err := filepath.Abs("../../runtime"); err == nil && isDir(filepath.Join(rt, "kernel")) && os.Getenv("BANGER_RUNTIME_DIR") == "" {
		env.Runtime = bundle.Dir{Path: rt, How: "the repository's ./runtime"}
	}
	env.ProbeKVM = !testing.Short()
	r := runCheck(t, env, IDFirecracker)
	if _, err := os.Stat(filepath.Join(env.Runtime.Path, FirecrackerBundlePath)); err == nil {
		testhost.SkipHardware(t, "the runtime bundle has %s", FirecrackerBundlePath)
	}
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "firecracker not found in", "or $PATH", "KVM", "banger uses QEMU")
	if !strings.Contains(r.Detail, "cannot run guests") && !strings.Contains(r.Detail, "runs guests") && !strings.Contains(r.Detail, "unknown") {
		t.Errorf("detail %q does not say what is known about KVM", r.Detail)
	}
	if err := Preflight(context.Background(), env, PurposeFirecracker); err == nil || !strings.Contains(err.Error(), "firecracker not found") {
		t.Errorf("firecracker preflight on this host: %v, want the missing firecracker", err)
	}
}

func runCheck(t *testing.T, env *Env, id string) Result {
	t.Helper()
	rep := Run(context.Background(), env, Filter{IDs: []string{id}})
	if len(rep.Checks) != 1 {
		t.Fatalf("no check %s", id)
	}
	c := rep.Checks[0]
	t.Logf("%s: %s: %s (fix: %s)", id, c.Status, c.Detail, c.Fix)
	return Result{Status: c.Status, Detail: c.Detail, Fix: c.Fix}
}

func TestKVM(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		f := newFixture(t)
		r := f.run(t, IDKVM)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "does not exist", "TCG will be used (slower)")
		wantContains(t, "fix", r.Fix, "modprobe kvm_intel")
		wantStatus(t, f.run(t, IDKVMGuest), StatusSkip)
	})
	t.Run("missing but forced", func(t *testing.T) {
		f := newFixture(t)
		f.env.AccelOverride = "kvm"
		r := f.run(t, IDKVM)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "asks for kvm")
		wantContains(t, "fix", r.Fix, "unset BANGER_ACCEL")
	})
	t.Run("not a device", func(t *testing.T) {
		f := newFixture(t)
		writeFile(t, f.env.DevKVM, "", 0o666)
		r := f.run(t, IDKVM)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "not a character device")
	})
	t.Run("opens", func(t *testing.T) {
		f := newFixture(t)
		f.env.DevKVM = "/dev/null" // a character device anyone may open, standing in for /dev/kvm
		wantStatus(t, f.run(t, IDKVM), StatusOK)
		r := f.run(t, IDKVMGuest)
		wantStatus(t, r, StatusSkip)
		wantContains(t, "detail", r.Detail, "runtime kernel")
	})
}

// TestKVMGuestFromCache writes the daemon's probe cache for the fixture's
// QEMU stand-in and kernel, as the daemon would, and checks that the
// checks read it without probing.
func TestKVMGuestFromCache(t *testing.T) {
	for _, ok := range []bool{false, true} {
		f := newFixture(t)
		f.writeRuntime(t)
		calls := filepath.Join(f.root, "qemu-calls")
		bin := fakeQEMU(t, f.bin, calls)
		f.env.DevKVM = "/dev/null"
		key, err := qemu.CurrentProbeKey(bin, f.env.Runtime.Kernel(), f.env.Runtime.Initrd(), "kvm")
		if err != nil {
			t.Fatal(err)
		}
		err = qemu.NewProbeCache(f.env.AccelCache).Put(qemu.ProbeResult{Key: key,
			ProbeOutcome: qemu.ProbeOutcome{OK: ok, ConsoleTail: "Linux version 6.1.0\n", Took: 15 * time.Second}, ProbedAt: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		r := f.run(t, IDKVMGuest)
		fc := f.run(t, IDFirecracker)
		if ok {
			wantStatus(t, r, StatusOK)
			wantContains(t, "detail", r.Detail, "KVM runs guests", "cached")
			wantContains(t, "firecracker detail", fc.Detail, "firecracker not found", "KVM runs guests", "banger uses QEMU")
		} else {
			wantStatus(t, r, StatusWarn)
			wantContains(t, "detail", r.Detail, "KVM cannot run guests: TCG will be used (slower)", "did not boot", "15s")
			wantContains(t, "fix", r.Fix, f.env.AccelCache)
			wantContains(t, "firecracker detail", fc.Detail, "KVM cannot run guests here (probe:", "banger uses QEMU")
			f.env.AccelOverride = "kvm"
			wantStatus(t, f.run(t, IDKVMGuest), StatusFail)
		}
		if _, err := os.Stat(calls); err == nil {
			t.Error("a cached answer still booted a probe")
		}
	}
}

// TestKVMGuestProbe lets doctor probe with the QEMU stand-in: the answer
// is reported and stored in the daemon's cache for the next run.
func TestKVMGuestProbe(t *testing.T) {
	f := newFixture(t)
	f.writeRuntime(t)
	calls := filepath.Join(f.root, "qemu-calls")
	fakeQEMU(t, f.bin, calls)
	f.env.DevKVM = "/dev/null"
	f.env.ProbeKVM = true
	var notes []string
	f.env.Notify = func(msg string) { notes = append(notes, msg) }

	r := runCheck(t, f.env, IDKVMGuest)
	wantStatus(t, r, StatusOK)
	if len(notes) != 1 || !strings.Contains(notes[0], "probe VM") {
		t.Errorf("notes before the probe: %q", notes)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal("no probe ran")
	}
	wantContains(t, "probe command line", string(b), "-accel kvm", "-kernel /proc/self/fd/", qemu.ProbeKernelArg)
	if _, err := os.Stat(f.env.AccelCache); err != nil {
		t.Fatalf("probe result not cached: %v", err)
	}
	os.Remove(calls)
	r = runCheck(t, f.env, IDKVMGuest)
	wantContains(t, "second run", r.Detail, "cached")
	if _, err := os.Stat(calls); err == nil {
		t.Error("second run probed again despite the cache")
	}
}

func TestVMMUser(t *testing.T) {
	setup := newFixture // root has its range, as make deps gives it
	t.Run("not root", func(t *testing.T) {
		f := setup(t)
		f.env.EUID, f.env.User = 1000, "dev"
		r := f.run(t, IDVMMUser)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "dev (uid 1000)", "seccomp")
	})
	t.Run("root without subordinate ids", func(t *testing.T) {
		f := setup(t)
		writeFile(t, f.env.SubIDs.SubUID, "", 0o644)
		writeFile(t, f.env.SubIDs.SubGID, "", 0o644)
		r := f.run(t, IDVMMUser)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "a user of its own", "has no entry for root")
		wantContains(t, "fix", r.Fix, "usermod --add-subuids 2147483648-2147614719 --add-subgids 2147483648-2147614719 root")
		err := Preflight(context.Background(), f.env, PurposeVMStart)
		if err == nil || !strings.Contains(err.Error(), IDVMMUser) {
			t.Errorf("vm start preflight: %v, want it blocked by %s", err, IDVMMUser)
		}
	})
	t.Run("root with subordinate ids", func(t *testing.T) {
		f := setup(t)
		r := f.run(t, IDVMMUser)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "uids 2147549184-2147614719", "gids 2147549184-2147614719", "seccomp")
	})
	t.Run("kvm closed to the vmm users", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testhost.Skip(t, "needs root to make a device node")
		}
		f := setup(t)
		f.env.DevKVM = filepath.Join(f.root, "kvm")
		if err := syscall.Mknod(f.env.DevKVM, syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		r := f.run(t, IDVMMUser)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, f.env.DevKVM+" (mode 0600", "closed to them")
		wantContains(t, "fix", r.Fix, "chmod 0660 "+f.env.DevKVM)
		f.env.AccelOverride = "kvm" // no fallback: VM starts would fail
		r = f.run(t, IDVMMUser)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "asks for kvm")
		if err := Preflight(context.Background(), f.env, PurposeVMStart); err == nil || !strings.Contains(err.Error(), IDVMMUser) {
			t.Errorf("vm start preflight with forced kvm: %v", err)
		}
		f.env.AccelOverride = "tcg" // KVM is not used: nothing to warn about
		wantStatus(t, f.run(t, IDVMMUser), StatusOK)
	})
}

func TestJailer(t *testing.T) {
	t.Run("no firecracker", func(t *testing.T) {
		f := newFixture(t)
		wantStatus(t, f.run(t, IDJailer), StatusOK)
	})
	t.Run("firecracker without its jailer", func(t *testing.T) {
		f := newFixture(t)
		fc := fakeFirecracker(t, filepath.Join(f.rt, "firecracker", "firecracker"))
		r := f.run(t, IDJailer)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, fc, "WITHOUT its jailer", filepath.Join(f.rt, "firecracker", "jailer"))
		wantContains(t, "fix", r.Fix, "jailer-v1.16.1-x86_64", filepath.Join(f.rt, "firecracker", "jailer"), "banger runtime fetch firecracker")
	})
	t.Run("a jailer of another release", func(t *testing.T) {
		f := newFixture(t)
		fakeFirecracker(t, filepath.Join(f.rt, "firecracker", "firecracker"))
		writeScript(t, filepath.Join(f.bin, "jailer"), `echo "Jailer v1.15.0"`)
		r := f.run(t, IDJailer)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "Jailer v1.15.0", "not of Firecracker's release v1.16.1")
	})
	t.Run("jailed", func(t *testing.T) {
		f := newFixture(t)
		fakeFirecracker(t, filepath.Join(f.rt, "firecracker", "firecracker"))
		p := writeScript(t, filepath.Join(f.rt, "firecracker", "jailer"), `echo "Jailer v1.16.1"`)
		f.env.EUID = 0
		r := f.run(t, IDJailer)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "Jailer v1.16.1 at "+p, "runs jailed")
		f.env.EUID = 1000
		r = f.run(t, IDJailer)
		wantStatus(t, r, StatusWarn)
		wantContains(t, "detail", r.Detail, "not root", "WITHOUT it")
	})
}
