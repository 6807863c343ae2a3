package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/jailer"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// FirecrackerBundlePath is where the runtime bundle keeps the firecracker
// binary, relative to the bundle directory; $PATH is searched after it.
const FirecrackerBundlePath = firecracker.BundlePath

// FirecrackerVersion is the Firecracker release banger's driver targets.
const FirecrackerVersion = "v" + fcapi.Version

// overrideSource names where AccelOverride comes from, for messages.
const overrideSource = "BANGER_ACCEL or vmm.accel in config.toml"

func checkQEMU(ctx context.Context, env *Env) Result {
	bin := env.qemuBinary()
	p, ok := lookPath(bin, env.PATH)
	if !ok {
		fix := "sudo apt-get install qemu-system-x86"
		if env.Config.VMM.QEMU != "" {
			fix += ", or correct vmm.qemu in " + env.Dirs.ConfigFile()
		}
		where := "in $PATH"
		if strings.Contains(bin, "/") {
			where = "(vmm.qemu in config.toml)"
		}
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s not found %s: banger cannot start VMs", bin, where), Fix: fix}
	}
	v, err := toolVersion(ctx, p)
	if err != nil {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s does not run: %v", p, err),
			Fix: "sudo apt-get install --reinstall qemu-system-x86"}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("%s (%s)", v, p)}
}

// findFirecracker looks in the runtime bundle, then $PATH.
func findFirecracker(env *Env) (string, bool) {
	if env.Runtime.Path != "" {
		if p := filepath.Join(env.Runtime.Path, FirecrackerBundlePath); isExecutable(p) {
			return p, true
		}
	}
	return lookPath("firecracker", env.PATH)
}

func checkFirecracker(ctx context.Context, env *Env) Result {
	kvm := env.kvmState(ctx)
	bundled := filepath.Join(env.Runtime.Path, filepath.Dir(FirecrackerBundlePath))
	install := fmt.Sprintf("install Firecracker %[1]s as %[2]s: download firecracker-%[1]s-x86_64.tgz from https://github.com/firecracker-microvm/firecracker/releases and copy release-%[1]s-x86_64/firecracker-%[1]s-x86_64 there (or put firecracker on $PATH)",
		FirecrackerVersion, filepath.Join(env.Runtime.Path, FirecrackerBundlePath))
	if kvm.cannotRunGuests() {
		install = "first make KVM run guests (see the kvm and kvm-guest checks), then " + install
	}
	// Firecracker is optional: banger falls back to QEMU, unless the user
	// asked for Firecracker by default.
	status := StatusWarn
	var forced string
	if env.Config.VMM.Default == "firecracker" {
		status = StatusFail
		forced = "vmm.default = \"firecracker\" in config.toml, but "
		install += ", or remove vmm.default from " + env.Dirs.ConfigFile()
	}

	p, ok := findFirecracker(env)
	if !ok {
		return Result{Status: status,
			Detail: fmt.Sprintf("%sfirecracker not found in %s or $PATH; %s: banger uses QEMU", forced, bundled, kvm.sentence()),
			Fix:    install}
	}
	v, err := toolVersion(ctx, p)
	if err != nil {
		return Result{Status: status,
			Detail: fmt.Sprintf("%sfirecracker at %s does not run (%v): banger uses QEMU", forced, p, err),
			Fix:    install}
	}
	switch {
	case kvm.cannotRunGuests():
		return Result{Status: status,
			Detail: fmt.Sprintf("%s%s at %s, but %s: banger uses QEMU", forced, v, p, kvm.sentence()),
			Fix:    "make KVM run guests (see the kvm and kvm-guest checks)"}
	case !kvm.probed:
		return Result{Status: StatusOK, Detail: fmt.Sprintf("%s at %s (%s)", v, p, kvm.sentence())}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("%s at %s; KVM runs guests", v, p)}
}

// JailerBundlePath is where the runtime bundle keeps Firecracker's jailer.
const JailerBundlePath = jailer.BundlePath

// findJailer looks for the jailer in the runtime bundle, then $PATH, as
// the daemon does (firecracker.FindJailer).
func findJailer(env *Env) (string, bool) {
	if env.Runtime.Path != "" {
		if p := filepath.Join(env.Runtime.Path, JailerBundlePath); isExecutable(p) {
			return p, true
		}
	}
	return lookPath(jailer.DefaultBinary, env.PATH)
}

// checkJailer warns when Firecracker would run without its jailer: none
// found, one of another release, or a daemon that is not root (the
// jailer needs root).
func checkJailer(ctx context.Context, env *Env) Result {
	fc, ok := findFirecracker(env)
	if !ok {
		return Result{Status: StatusOK, Detail: "no Firecracker here (see the firecracker check): nothing to jail"}
	}
	want := filepath.Join(env.Runtime.Path, JailerBundlePath)
	install := fmt.Sprintf("install the jailer of the same release as %s: copy release-%[2]s-x86_64/jailer-%[2]s-x86_64 from firecracker-%[2]s-x86_64.tgz (https://github.com/firecracker-microvm/firecracker/releases) to %[3]s (`banger runtime fetch firecracker` fetches both), or put jailer on $PATH",
		fc, FirecrackerVersion, want)
	p, ok := findJailer(env)
	if !ok {
		return Result{Status: StatusWarn,
			Detail: fmt.Sprintf("Firecracker (%s) would run WITHOUT its jailer (no chroot, no cgroup limits): no jailer at %s or in $PATH", fc, want),
			Fix:    install}
	}
	v, err := toolVersion(ctx, p)
	if err != nil {
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("the jailer at %s does not run (%v): Firecracker would run WITHOUT it", p, err), Fix: install}
	}
	if !strings.Contains(v, FirecrackerVersion) {
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("the jailer at %s is %q, not of Firecracker's release %s", p, v, FirecrackerVersion), Fix: install}
	}
	if env.EUID != 0 {
		return Result{Status: StatusWarn,
			Detail: fmt.Sprintf("%s at %s, but bangerd is not root and the jailer needs root: Firecracker runs WITHOUT it, as your user", v, p),
			Fix:    "run bangerd as root (sudo) for jailed VMMs of their own users"}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("%s at %s: Firecracker runs jailed (chroot, own uid, cgroup limits)", v, p)}
}

func checkVMMUser(ctx context.Context, env *Env) Result {
	if env.EUID != 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("bangerd is not root: VMMs run as %s (uid %d), QEMU under its seccomp sandbox", userLabel(env), env.EUID)}
	}
	user := env.User
	if user == "" {
		user = "root"
	}
	ids, err := subid.Lookup(env.SubIDs, user, 0)
	if err != nil {
		why, _, _ := strings.Cut(err.Error(), " (fix: ")
		return Result{Status: StatusFail,
			Detail: "a root bangerd runs each VM's VMM as a user of its own, taken from root's subordinate ids, and cannot: " + why,
			Fix:    "sudo " + subid.FixCommand(user, 0)}
	}
	first, firstGID, _ := ids.VMM(0)
	last, lastGID, _ := ids.VMM(subid.VMMSlots - 1)
	r := Result{Status: StatusOK, Detail: fmt.Sprintf("VMMs run as uids %d-%d and gids %d-%d (one pair per running VM, from root's subordinate ids), QEMU under its seccomp sandbox",
		first, last, firstGID, lastGID)}
	// A KVM guest needs /dev/kvm, and Firecracker /dev/net/tun, open to
	// those users.
	var devs []string
	if kvm := env.kvmState(ctx); !kvm.cannotRunGuests() && env.AccelOverride != "tcg" {
		devs = append(devs, env.DevKVM)
	}
	if _, ok := findFirecracker(env); ok {
		devs = append(devs, env.DevTUN)
	}
	var problems, fixes []string
	for _, dev := range devs {
		_, err := vmm.DeviceGroups(vmm.Identity{UID: first, GID: firstGID}, dev)
		var de *vmm.DeviceError
		if errors.As(err, &de) {
			problems = append(problems, fmt.Sprintf("%s (mode %04o, owner %d:%d) is closed to them", de.Device, de.Mode, de.UID, de.GID))
			fixes = append(fixes, "sudo "+de.Fix)
			if dev == env.DevKVM && env.AccelOverride == "kvm" {
				// No fallback: every VM start would fail.
				r.Status = StatusFail
			}
		}
	}
	if len(problems) > 0 {
		if r.Status == StatusOK {
			r.Status = StatusWarn // banger uses TCG, and QEMU instead of Firecracker
		}
		r.Detail += "; but " + strings.Join(problems, "; ")
		if r.Status == StatusFail {
			r.Detail += ", and " + overrideSource + " asks for kvm"
		}
		r.Fix = strings.Join(fixes, "\n")
	}
	return r
}

func checkKVM(ctx context.Context, env *Env) Result {
	kvm := env.kvmState(ctx)
	if kvm.devErr == nil {
		return Result{Status: StatusOK, Detail: env.DevKVM + " opens read-write"}
	}
	r := Result{Status: StatusWarn, Detail: kvm.devErr.Error() + ": TCG will be used (slower); Firecracker cannot run"}
	switch {
	case kvm.devMissing:
		r.Fix = "load KVM: `sudo modprobe kvm_intel` (Intel) or `sudo modprobe kvm_amd` (AMD); inside a VM, enable nested virtualization on its host"
	case kvm.devPerm:
		r.Fix = "sudo usermod -aG kvm $USER, then log in again"
	default:
		r.Fix = "make " + env.DevKVM + " a working KVM device (`sudo modprobe kvm_intel` or `kvm_amd`)"
	}
	if env.AccelOverride == "kvm" {
		r.Status = StatusFail
		r.Detail = kvm.devErr.Error() + ", but " + overrideSource + " asks for kvm: VMs will not start"
		r.Fix += "; or unset BANGER_ACCEL and vmm.accel so banger falls back to TCG"
	}
	return r
}

func checkKVMGuest(ctx context.Context, env *Env) Result {
	kvm := env.kvmState(ctx)
	note := ""
	if env.AccelOverride == "tcg" {
		note = " (" + overrideSource + " chooses tcg anyway)"
	}
	switch {
	case kvm.devErr != nil:
		return Result{Status: StatusSkip, Detail: env.DevKVM + " is not usable (see the kvm check): TCG will be used"}
	case !kvm.probed:
		return Result{Status: StatusSkip, Detail: kvm.sentence() + note}
	case kvm.ok:
		return Result{Status: StatusOK, Detail: kvm.sentence() + note}
	}
	r := Result{Status: StatusWarn,
		Detail: fmt.Sprintf("KVM cannot run guests: TCG will be used (slower); probe: %s%s", kvm.why, note),
		Fix: fmt.Sprintf("QEMU needs nothing (it uses TCG); for KVM speed and Firecracker, run banger on bare metal or enable nested virtualization on the machine hosting this one, then `rm %s` so banger probes again",
			env.AccelCache)}
	if env.AccelOverride == "kvm" {
		r.Status = StatusFail
		r.Detail = fmt.Sprintf("KVM cannot run guests (probe: %s), but %s asks for kvm: VMs will hang at boot", kvm.why, overrideSource)
		r.Fix = "unset BANGER_ACCEL and remove vmm.accel from " + env.Dirs.ConfigFile() + " so banger uses TCG"
	}
	return r
}

// kvmMemo shares the KVM findings between the checks of one Run, so the
// probe boots at most once.
type kvmMemo struct {
	once  sync.Once
	state kvmState
}

// kvmState is what is known about KVM on this host.
type kvmState struct {
	devErr     error // nil when the device opens read-write
	devMissing bool
	devPerm    bool
	probed     bool // a boot probe answer exists, fresh or cached
	ok         bool // the probe guest booted under KVM
	cached     bool
	probedAt   time.Time
	why        string // why the probe failed, when probed && !ok
	notProbed  string // why there is no answer, when !probed
}

// cannotRunGuests is true when KVM is known not to run guests here.
func (k kvmState) cannotRunGuests() bool { return k.devErr != nil || (k.probed && !k.ok) }

// sentence says what is known about KVM, for details.
func (k kvmState) sentence() string {
	switch {
	case k.devErr != nil:
		return "KVM cannot run guests here (" + k.devErr.Error() + ")"
	case !k.probed:
		return "whether KVM can run guests is unknown: " + k.notProbed
	case k.ok && k.cached:
		return "KVM runs guests (boot probe succeeded; cached " + k.probedAt.Local().Format(time.DateTime) + ")"
	case k.ok:
		return "KVM runs guests (boot probe succeeded)"
	case k.cached:
		return fmt.Sprintf("KVM cannot run guests here (probe: %s; cached %s)", k.why, k.probedAt.Local().Format(time.DateTime))
	}
	return "KVM cannot run guests here (probe: " + k.why + ")"
}

// kvmState returns the KVM findings, computing them once per Run.
func (e *Env) kvmState(ctx context.Context) kvmState {
	if e.kvm == nil {
		return computeKVM(ctx, e)
	}
	e.kvm.once.Do(func() { e.kvm.state = computeKVM(ctx, e) })
	return e.kvm.state
}

func computeKVM(ctx context.Context, e *Env) kvmState {
	var k kvmState
	k.devMissing, k.devPerm, k.devErr = openDevice(e.DevKVM)
	if k.devErr != nil {
		return k
	}
	kernel, initrd := e.Runtime.Kernel(), e.Runtime.Initrd()
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			k.notProbed = "the runtime kernel needed for the boot probe is missing (see the runtime check)"
			return k
		}
	}
	bin, ok := lookPath(e.qemuBinary(), e.PATH)
	if !ok {
		k.notProbed = "QEMU, needed for the boot probe, is missing (see the qemu check)"
		return k
	}
	a := qemu.KVMProbe{Binary: bin, Kernel: kernel, Initrd: initrd, Cache: e.AccelCache,
		Timeout: e.probeTimeout(), Boot: e.ProbeKVM, Notify: e.Notify}.Run(ctx)
	switch {
	case a.Err != nil:
		k.notProbed = fmt.Sprintf("the boot probe could not run: %v", a.Err)
	case !a.Known:
		k.notProbed = "no current boot probe result in " + e.AccelCache + " (the daemon probes at start; `banger doctor` probes, up to " + e.probeTimeout().String() + ")"
	default:
		k.probed, k.ok, k.cached, k.probedAt = true, a.Result.OK, a.Cached, a.Result.ProbedAt
		k.why = a.Result.Why()
	}
	return k
}

func (e *Env) probeTimeout() time.Duration {
	if e.ProbeTimeout > 0 {
		return e.ProbeTimeout
	}
	return qemu.DefaultProbeTimeout
}

// openDevice opens a character device read-write and closes it again. It
// reports why that failed, and whether because the node is missing or
// because this user may not open it.
func openDevice(dev string) (missing, perm bool, err error) {
	st, err := os.Stat(dev)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return true, false, fmt.Errorf("%s does not exist", dev)
		}
		return false, errors.Is(err, fs.ErrPermission), fmt.Errorf("stat %s: %w", dev, err)
	}
	if st.Mode()&fs.ModeCharDevice == 0 {
		return false, false, fmt.Errorf("%s is not a character device", dev)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return false, true, fmt.Errorf("%s is not read-write for this user", dev)
		}
		return false, false, fmt.Errorf("open %s: %w", dev, err)
	}
	f.Close()
	return false, false, nil
}
