package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/vmm"
)

// ProbeMarker is the console line the runtime initramfs prints when booted
// with banger.probe=1 on the kernel command line; it then reboots at once,
// which ends QEMU because of -no-reboot.
const ProbeMarker = "banger-probe: ok"

// ProbeKernelArg is appended to the probe's kernel command line.
const ProbeKernelArg = "banger.probe=1"

// DefaultProbeTimeout bounds one probe boot when the caller gives none.
// A KVM probe finishes in well under a second where KVM works; a TCG probe
// takes about 4-10 s on the 2-core build machines.
const DefaultProbeTimeout = 15 * time.Second

// consoleTailBytes is how much of the console a probe reports.
const consoleTailBytes = 4096

// ProbeOutcome is the answer of one probe boot.
type ProbeOutcome struct {
	// OK is true when the probe marker appeared on the console.
	OK bool `json:"ok"`
	// ConsoleTail is the end of the console output.
	ConsoleTail string `json:"console_tail,omitempty"`
	// QEMUError is QEMU's own error output when it exited on its own
	// (for example because it could not initialize KVM).
	QEMUError string `json:"qemu_error,omitempty"`
	// Took is how long the probe ran.
	Took time.Duration `json:"duration_ns"`
}

// Why says why a failed probe failed, in words fit for `banger doctor`
// and logs: QEMU's own error when it printed one, else a guest that never
// printed the marker.
func (o ProbeOutcome) Why() string {
	if o.OK {
		return ""
	}
	if msg, _, _ := strings.Cut(strings.TrimSpace(o.QEMUError), "\n"); msg != "" {
		return "qemu failed: " + msg
	}
	return fmt.Sprintf("the probe guest did not boot to its marker in %s", o.Took.Round(100*time.Millisecond))
}

// ProbeAccel boots kernel and initrd with QEMU binary bin (a path, or a
// name looked up in $PATH; "" = DefaultBinary) under accel ("kvm" or
// "tcg") with no disk and no network, the console in a temporary file, and
// ProbeKernelArg on the kernel command line, and reports whether
// ProbeMarker appeared on the console within timeout. QEMU is killed as soon
// as the marker appears or the timeout passes.
//
// A guest that hangs or a QEMU that fails gives OK false with a nil error:
// that is an answer about accel. The error is non-nil only when the probe
// could not be run (bad arguments, missing files, QEMU not executable, ctx
// ended), in which case the probe says nothing about accel.
func ProbeAccel(ctx context.Context, bin, accel, kernel, initrd string, timeout time.Duration) (ProbeOutcome, error) {
	t0 := time.Now()
	o, err := probeAccel(ctx, bin, accel, kernel, initrd, timeout)
	o.Took = time.Since(t0)
	if err != nil {
		return o, fmt.Errorf("probe %s: %w", accel, err)
	}
	return o, nil
}

func probeAccel(ctx context.Context, bin, accel, kernel, initrd string, timeout time.Duration) (ProbeOutcome, error) {
	if accel != "kvm" && accel != "tcg" {
		return ProbeOutcome{}, fmt.Errorf("accel %q: want \"kvm\" or \"tcg\"", accel)
	}
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	bin, err := resolveBinary(bin)
	if err != nil {
		return ProbeOutcome{}, err
	}
	for what, p := range map[string]string{"kernel": kernel, "initrd": initrd} {
		if p == "" && what == "initrd" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return ProbeOutcome{}, fmt.Errorf("%s: %w", what, err)
		}
	}
	dir, err := os.MkdirTemp("", "banger-probe-")
	if err != nil {
		return ProbeOutcome{}, err
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console.log")

	cmdline := "console=ttyS0 reboot=k panic=1 " + ProbeKernelArg
	if accel == "tcg" {
		cmdline = withTSCHint(cmdline, tscArgs())
	}
	var plan fdPlan
	argv := append([]string{bin, "-name", "banger-probe-" + accel}, bootArgs(&plan, vmm.Spec{
		Accel: accel, MemoryMiB: 256, CPUs: 1, ConsoleLog: console,
		Kernel: kernel, Initrd: initrd, KernelArgs: cmdline})...)
	passed, err := openFiles(plan.files)
	if err != nil {
		return ProbeOutcome{}, err
	}
	defer closeFiles(passed)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = passed
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	// Unlike a VM, a probe is our child and must die with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return ProbeOutcome{}, fmt.Errorf("run %s: %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() error {
		cmd.Process.Kill()
		return <-done
	}
	seen := func() bool {
		b, _ := os.ReadFile(console)
		return bytes.Contains(b, []byte(ProbeMarker))
	}
	answer := func(ok bool) ProbeOutcome {
		return ProbeOutcome{OK: ok, ConsoleTail: tail(console)}
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stop()
			return answer(false), ctx.Err()
		case <-deadline.C:
			stop()
			return answer(seen()), nil // the marker may have come just before the deadline
		case werr := <-done:
			if seen() {
				return answer(true), nil
			}
			o := answer(false)
			o.QEMUError = strings.TrimSpace(stderr.String())
			if werr != nil {
				o.QEMUError = strings.TrimSpace(fmt.Sprintf("%v: %s", werr, o.QEMUError))
			}
			return o, nil
		case <-tick.C:
			if seen() {
				stop()
				return answer(true), nil
			}
		}
	}
}

// tail returns the last consoleTailBytes of the console file, starting at a
// line boundary.
func tail(console string) string {
	b, _ := os.ReadFile(console)
	return lastLines(string(b), consoleTailBytes)
}

// KVMProbe answers whether KVM runs guests on this host: from the probe
// cache when it holds a current answer, else (when Boot allows) by a probe
// boot under KVM whose answer it stores in the cache. The daemon (which
// boots at start) and `banger doctor` (which boots unless told not to, and
// whose preflight never does) share it and its cache file.
type KVMProbe struct {
	// Binary is the QEMU binary: a path or a name looked up in $PATH; ""
	// means DefaultBinary.
	Binary string
	// Kernel and Initrd are the runtime kernel and initramfs; the
	// initramfs must print ProbeMarker under ProbeKernelArg.
	Kernel, Initrd string
	// Cache is the probe cache file (see ProbeCache); "" disables caching.
	Cache string
	// Timeout bounds the probe boot; 0 means DefaultProbeTimeout.
	Timeout time.Duration
	// Boot allows a probe boot when the cache has no current answer.
	Boot bool
	// Notify, when set, is told before a probe boot starts.
	Notify func(msg string)
	// Log receives cache problems; nil discards them.
	Log *slog.Logger
}

// KVMAnswer is what a KVMProbe learned.
type KVMAnswer struct {
	// Known is true when a probe answered, fresh or from the cache; the
	// answer is then in Result.
	Known  bool
	Result ProbeResult
	// Cached is true when Result came from the cache.
	Cached bool
	// Err says why the probe could not run, when it was allowed to and
	// did not; with Known false and Err nil, the cache had no current
	// answer and Boot was false.
	Err error
}

// Run answers. It boots at most once, and only when p.Boot.
func (p KVMProbe) Run(ctx context.Context) KVMAnswer {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cache *ProbeCache
	key, keyErr := CurrentProbeKey(p.Binary, p.Kernel, p.Initrd, "kvm")
	if p.Cache != "" {
		if keyErr != nil {
			log.Warn("probe cache unusable", "err", keyErr)
		} else {
			cache = NewProbeCache(p.Cache)
			if r, ok := cache.Get(key); ok {
				return KVMAnswer{Known: true, Result: r, Cached: true}
			}
		}
	}
	if !p.Boot {
		return KVMAnswer{}
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	if p.Notify != nil {
		p.Notify(fmt.Sprintf("booting a probe VM to learn whether KVM can run guests (up to %s; the result is cached)", timeout))
	}
	o, err := ProbeAccel(ctx, p.Binary, "kvm", p.Kernel, p.Initrd, timeout)
	if err != nil {
		return KVMAnswer{Err: err}
	}
	r := ProbeResult{Key: key, ProbeOutcome: o, ProbedAt: time.Now().UTC()}
	r.ConsoleTail = lastLines(r.ConsoleTail, 1024)
	if cache != nil {
		if err := cache.Put(r); err != nil {
			log.Warn("store probe result", "err", err)
		}
	}
	return KVMAnswer{Known: true, Result: r}
}

// AccelOptions are the inputs of ResolveAccel.
type AccelOptions struct {
	// Override is the user's explicit choice (BANGER_ACCEL or the config
	// file): "kvm", "tcg", or "" for automatic.
	Override string
	// Binary is the QEMU binary: a path or a name looked up in $PATH; ""
	// means DefaultBinary.
	Binary string
	// Kernel and Initrd are the runtime kernel and initramfs used for the
	// probe boot; the initramfs must print ProbeMarker under ProbeKernelArg.
	Kernel, Initrd string
	// ProbeTimeout bounds the probe boot; 0 means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Cache is the path of the probe cache file (see ProbeCache), so probe
	// results survive daemon restarts; "" disables caching.
	Cache string
	// KVMDevice is the KVM device node; "" means /dev/kvm.
	KVMDevice string
	// RunAs is a user VMs run as (see vmm.Spec.RunAs); when set, the
	// automatic choice takes KVM only if that user may open the device.
	RunAs *vmm.Identity
	// Log receives the decision; nil discards it.
	Log *slog.Logger
}

// AccelChoice is the outcome of ResolveAccel.
type AccelChoice struct {
	// Accel is "kvm" or "tcg".
	Accel string
	// Reason says why, in words fit for `banger doctor` and logs.
	Reason string
	// Probed is true when a KVM boot probe ran (or its cached result was
	// used); Cached is true when that result came from the cache.
	Probed, Cached bool
}

// ResolveAccel decides between "kvm" and "tcg". An explicit
// opts.Override wins: it must be "kvm" or "tcg" (otherwise an error naming
// the bad value), and "kvm" also requires that the KVM device opens
// read-write (otherwise an error saying how to fix the permission).
// Automatic choice picks "kvm" only when the device opens read-write (and
// opts.RunAs, when set, may open it) AND a boot probe (ProbeAccel) under KVM
// succeeded, because /dev/kvm can exist on hosts (nested VMs) where KVM
// guests hang; in every other case it picks
// "tcg" and says why in Reason. Probe results are taken from and stored in
// the cache file opts.Cache when given. Automatic choice returns an error only when ctx
// ends.
func ResolveAccel(ctx context.Context, opts AccelOptions) (AccelChoice, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "vmm.qemu")
	dev := opts.KVMDevice
	if dev == "" {
		dev = "/dev/kvm"
	}
	switch opts.Override {
	case "tcg":
		return AccelChoice{Accel: "tcg", Reason: "set by BANGER_ACCEL or config"}, nil
	case "kvm":
		if err := openKVM(dev); err != nil {
			return AccelChoice{}, fmt.Errorf("accel kvm was requested (BANGER_ACCEL or config) but %w", err)
		}
		return AccelChoice{Accel: "kvm", Reason: "set by BANGER_ACCEL or config"}, nil
	case "":
	default:
		return AccelChoice{}, fmt.Errorf("invalid accelerator %q (from BANGER_ACCEL or config): want \"kvm\", \"tcg\" or empty for automatic", opts.Override)
	}

	choice := func(c AccelChoice) (AccelChoice, error) {
		log.Info("accelerator chosen", "accel", c.Accel, "reason", c.Reason, "cached", c.Cached)
		return c, nil
	}
	if err := openKVM(dev); err != nil {
		return choice(AccelChoice{Accel: "tcg", Reason: err.Error()})
	}
	if opts.RunAs != nil {
		if _, err := vmm.DeviceGroups(*opts.RunAs, dev); err != nil {
			return choice(AccelChoice{Accel: "tcg", Reason: err.Error()})
		}
	}
	if opts.Kernel == "" {
		return choice(AccelChoice{Accel: "tcg", Reason: "no runtime kernel to probe KVM with"})
	}
	a := KVMProbe{Binary: opts.Binary, Kernel: opts.Kernel, Initrd: opts.Initrd, Cache: opts.Cache,
		Timeout: opts.ProbeTimeout, Boot: true, Log: log}.Run(ctx)
	if a.Err != nil {
		if ctx.Err() != nil {
			return AccelChoice{}, fmt.Errorf("resolve accelerator: %w", a.Err)
		}
		return choice(AccelChoice{Accel: "tcg", Reason: fmt.Sprintf("could not probe kvm: %v", a.Err)})
	}
	log.Debug("kvm probe", "ok", a.Result.OK, "took", a.Result.Took.Round(time.Millisecond), "cached", a.Cached)
	if a.Result.OK {
		return choice(AccelChoice{Accel: "kvm", Reason: "kvm boot probe succeeded", Probed: true, Cached: a.Cached})
	}
	return choice(AccelChoice{Accel: "tcg", Reason: "/dev/kvm is usable but a kvm boot probe failed (" + a.Result.Why() + ")", Probed: true, Cached: a.Cached})
}

// lastLines cuts s to at most n bytes from its end, at a line boundary.
func lastLines(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// openKVM reports why the KVM device cannot be opened read-write.
func openKVM(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s does not exist (no KVM on this host: kvm module not loaded, or nested virtualization off)", dev)
		case errors.Is(err, fs.ErrPermission):
			return fmt.Errorf("%s is not read-write for this user: run `sudo usermod -aG kvm $USER` and log in again", dev)
		}
		return fmt.Errorf("open %s: %w", dev, err)
	}
	f.Close()
	return nil
}

// ProbeKey identifies the conditions a probe result holds for: it is
// stale when the host kernel, the QEMU binary, or the guest kernel or
// initramfs changes.
type ProbeKey struct {
	HostKernel    string    `json:"host_kernel"` // uname -r
	QEMU          string    `json:"qemu"`
	QEMUModTime   time.Time `json:"qemu_mtime"`
	Kernel        string    `json:"kernel"`
	KernelModTime time.Time `json:"kernel_mtime"`
	Initrd        string    `json:"initrd,omitempty"`
	InitrdModTime time.Time `json:"initrd_mtime,omitzero"`
	Accel         string    `json:"accel"`
}

func (k ProbeKey) equal(o ProbeKey) bool {
	return k.HostKernel == o.HostKernel && k.QEMU == o.QEMU && k.QEMUModTime.Equal(o.QEMUModTime) &&
		k.Kernel == o.Kernel && k.KernelModTime.Equal(o.KernelModTime) &&
		k.Initrd == o.Initrd && k.InitrdModTime.Equal(o.InitrdModTime) && k.Accel == o.Accel
}

// CurrentProbeKey builds the key for probing accel with QEMU binary bin
// (a path, or a name looked up in $PATH; "" = DefaultBinary), kernel and initrd (optional) as they are
// now on this host.
func CurrentProbeKey(bin, kernel, initrd, accel string) (ProbeKey, error) {
	bin, err := resolveBinary(bin)
	if err != nil {
		return ProbeKey{}, err
	}
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ProbeKey{}, fmt.Errorf("host kernel release: %w", err)
	}
	k := ProbeKey{HostKernel: strings.TrimSpace(string(rel)), QEMU: bin, Kernel: kernel, Initrd: initrd, Accel: accel}
	mtime := func(p string) (time.Time, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return time.Time{}, err
		}
		return fi.ModTime().UTC(), nil
	}
	if k.QEMUModTime, err = mtime(bin); err != nil {
		return ProbeKey{}, err
	}
	if k.KernelModTime, err = mtime(kernel); err != nil {
		return ProbeKey{}, err
	}
	if initrd != "" {
		if k.InitrdModTime, err = mtime(initrd); err != nil {
			return ProbeKey{}, err
		}
	}
	return k, nil
}

// ProbeResult is one cached probe outcome.
type ProbeResult struct {
	Key ProbeKey `json:"key"`
	ProbeOutcome
	ProbedAt time.Time `json:"probed_at"`
}

// probeCacheFile is the on-disk layout: one result per accelerator.
type probeCacheFile struct {
	Version int           `json:"version"`
	Results []ProbeResult `json:"results"`
}

const probeCacheVersion = 2 // 2: QEMU's error apart from the console

// ProbeCache stores probe results as JSON in one file, so a daemon restart
// does not pay for another probe boot. It is safe for use by one process;
// writes are atomic (temporary file, fsync, rename), so concurrent writers
// lose updates but never corrupt the file.
type ProbeCache struct {
	path string
}

// NewProbeCache returns a cache kept at path (for example
// $XDG_CACHE_HOME/banger/accel-probe.json). The file and its folder are
// created on the first Put.
func NewProbeCache(path string) *ProbeCache { return &ProbeCache{path: path} }

// Path returns the cache file path.
func (c *ProbeCache) Path() string { return c.path }

func (c *ProbeCache) load() (probeCacheFile, error) {
	var f probeCacheFile
	b, err := os.ReadFile(c.path)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return probeCacheFile{}, fmt.Errorf("parse %s: %w", c.path, err)
	}
	if f.Version != probeCacheVersion {
		return probeCacheFile{}, fmt.Errorf("%s: version %d, want %d", c.path, f.Version, probeCacheVersion)
	}
	return f, nil
}

// Get returns the stored result whose key equals key. A missing,
// unreadable or outdated file is a miss.
func (c *ProbeCache) Get(key ProbeKey) (ProbeResult, bool) {
	f, err := c.load()
	if err != nil {
		return ProbeResult{}, false
	}
	for _, r := range f.Results {
		if r.Key.equal(key) {
			return r, true
		}
	}
	return ProbeResult{}, false
}

// Put stores r, replacing any result for the same accelerator, and writes
// the file atomically with mode 0600.
func (c *ProbeCache) Put(r ProbeResult) error {
	f, err := c.load()
	if err != nil {
		f = probeCacheFile{}
	}
	f.Version = probeCacheVersion
	kept := f.Results[:0]
	for _, old := range f.Results {
		if old.Key.Accel != r.Key.Accel {
			kept = append(kept, old)
		}
	}
	f.Results = append(kept, r)
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode probe cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	if err := atomicfile.WriteFile(c.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	return nil
}
