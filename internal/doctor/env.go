package doctor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/filestamp"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// Disk-space thresholds used by NewEnv.
const (
	DefaultDiskWarnBytes = 5 << 30
	DefaultDiskFailBytes = 1 << 30
)

// commandTimeout bounds each helper command a check runs (--version,
// debugfs): none of them should take more than a moment.
const commandTimeout = 10 * time.Second

// Env is everything the checks look at. Build it with NewEnv or LoadEnv,
// which fill every field from the real host; tests then point fields at
// files of their own. Checks read every field as it is: an empty path means
// "not there", not "use the default".
type Env struct {
	// Runtime is the resolved runtime bundle.
	Runtime bundle.Dir
	// VerifyRuntime, when set, checks the bundle's contents (checksums
	// against its manifest) once its files are all present; a non-nil error
	// fails the runtime check. Nil means contents are not verified.
	VerifyRuntime func(ctx context.Context, d bundle.Dir) error

	// Dirs are banger's XDG directories.
	Dirs paths.Dirs
	// Config is the loaded config.toml; ConfigErr is why it could not be
	// loaded (Config is then the zero value and the config check fails).
	Config    config.Config
	ConfigErr error

	// PATH is the executable search path (a $PATH-style list).
	PATH string
	// SbinDirs are searched after PATH for host tools that live in sbin
	// (e2fsprogs), which an ordinary user's $PATH often lacks; the image
	// package looks there too.
	SbinDirs []string

	// DevKVM, DevTUN and DevVhostVsock are the device nodes checked.
	DevKVM, DevTUN, DevVhostVsock string
	// ProcStatus is read for the effective capability set (CapEff).
	ProcStatus string
	// CPUInfo is read for the TSC's flags (guest-clock).
	CPUInfo string
	// SubIDs are the subordinate id files (and the account files their
	// ranges must not overlap) the daemon's build sandboxes take their ids
	// from (package subid).
	SubIDs subid.Files
	// EUID is the effective user id the checks judge privileges for;
	// User is that user's login name ("" when unknown).
	EUID int
	User string
	// TrustedUID is the owner a root daemon accepts for the runtime bundle
	// and the VMM binaries it runs: 0 (tests use their own uid).
	TrustedUID int

	// Bangerd is the daemon binary whose file capabilities are checked
	// when the user is not root; "" when it was not found. InDaemon is true
	// when the checks run inside bangerd itself, whose own effective
	// capabilities then decide.
	Bangerd  string
	InDaemon bool

	// AccelOverride is the user's accelerator choice ($BANGER_ACCEL, else
	// vmm.accel): "kvm", "tcg" or "" for automatic.
	AccelOverride string
	// AccelCache is the daemon's KVM probe cache file (qemu.ProbeCache).
	AccelCache string
	// ProbeKVM allows the KVM check to boot a probe VM (up to
	// ProbeTimeout) when the cache holds no current answer; the result is
	// stored in AccelCache for the daemon. Preflight always clears it.
	ProbeKVM     bool
	ProbeTimeout time.Duration
	// Notify, when set, is told before a slow step starts (the probe
	// boot), so a command can say why it is quiet; it may be called from
	// any goroutine.
	Notify func(msg string)

	// ImageAgent, when set, gives the image-agent check's finding from
	// where the images are: only bangerd reads its database and image
	// files, so `banger doctor` asks it over RPC. Nil skips the check.
	ImageAgent func(ctx context.Context) Result
	// Names, when set, gives the vm-names check's finding: whether the
	// running bangerd serves NAME.banger.internal and this host resolves
	// it (see NamesResult). Nil skips the check.
	Names func(ctx context.Context) Result

	// DiskWarnBytes and DiskFailBytes are the free-space thresholds for
	// the state and data directories.
	DiskWarnBytes, DiskFailBytes uint64

	// kvm memoizes the KVM findings within one Run; nil outside Run.
	kvm *kvmMemo
}

// NewEnv returns an Env for this host with banger's directories dirs and
// configuration cfg: the runtime bundle is resolved as the daemon resolves
// it (bundle.Resolve), the accelerator override is read from $BANGER_ACCEL
// then cfg, and the probe cache is the daemon's, under dirs.State.
// ProbeKVM is false.
func NewEnv(dirs paths.Dirs, cfg config.Config) *Env {
	e := &Env{
		Runtime:       bundle.Resolve(cfg.Runtime.Dir),
		Dirs:          dirs,
		Config:        cfg,
		PATH:          os.Getenv("PATH"),
		SbinDirs:      []string{"/usr/sbin", "/sbin", "/usr/local/sbin"},
		DevKVM:        "/dev/kvm",
		DevTUN:        "/dev/net/tun",
		DevVhostVsock: "/dev/vhost-vsock",
		ProcStatus:    "/proc/self/status",
		CPUInfo:       "/proc/cpuinfo",
		SubIDs:        subid.System,
		EUID:          os.Geteuid(),
		AccelOverride: os.Getenv("BANGER_ACCEL"),
		AccelCache:    filepath.Join(dirs.State, "accel-probe.json"),
		ProbeTimeout:  qemu.DefaultProbeTimeout,
		DiskWarnBytes: DefaultDiskWarnBytes,
		DiskFailBytes: DefaultDiskFailBytes,
	}
	if e.AccelOverride == "" {
		e.AccelOverride = cfg.VMM.Accel
	}
	if u, err := user.LookupId(strconv.Itoa(e.EUID)); err == nil {
		e.User = u.Username
	}
	e.Bangerd = findBangerd(e.PATH)
	if exe, err := os.Executable(); err == nil && e.Bangerd != "" {
		a, errA := os.Stat(exe)
		b, errB := os.Stat(e.Bangerd)
		e.InDaemon = errA == nil && errB == nil && os.SameFile(a, b)
	}
	return e
}

// LoadEnv is NewEnv for the current user: it resolves the XDG directories
// and loads config.toml. A config file that does not load is not an error
// here: it is kept in ConfigErr, for the config check to report with the
// rest. The error is non-nil only when the directories cannot be resolved.
func LoadEnv() (*Env, error) {
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, fmt.Errorf("doctor: %w", err)
	}
	cfg, cfgErr := config.Load(dirs.ConfigFile())
	e := NewEnv(dirs, cfg)
	e.ConfigErr = cfgErr
	return e, nil
}

// findBangerd finds the daemon binary the way the CLI does: beside this
// executable, else in path.
func findBangerd(path string) string {
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			p := filepath.Join(filepath.Dir(exe), "bangerd")
			if isExecutable(p) {
				return p
			}
		}
	}
	p, _ := lookPath("bangerd", path)
	return p
}

// lookPath finds an executable named name in the directories of path (a
// $PATH-style list). A name with a slash is taken as a path.
func lookPath(name, path string) (string, bool) {
	if strings.Contains(name, "/") {
		return name, isExecutable(name)
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue // an empty element means ".": never trust it here
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			if abs, err := filepath.Abs(p); err == nil {
				p = abs
			}
			return p, true
		}
	}
	return "", false
}

// lookTool is lookPath over PATH, then SbinDirs.
func (e *Env) lookTool(name string) (string, bool) {
	if p, ok := lookPath(name, e.PATH); ok {
		return p, true
	}
	return lookPath(name, strings.Join(e.SbinDirs, string(filepath.ListSeparator)))
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// qemuBinary returns the configured QEMU binary name or path.
func (e *Env) qemuBinary() string {
	if e.Config.VMM.QEMU != "" {
		return e.Config.VMM.QEMU
	}
	return qemu.DefaultBinary
}

// runTool runs bin with args (at most commandTimeout) and returns its
// standard output and error output.
func runTool(ctx context.Context, bin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(e.String())
		if ctx.Err() != nil {
			err = fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), ctx.Err())
		} else if msg != "" {
			err = fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, firstLine(msg))
		} else {
			err = fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), err)
		}
	}
	return o.String(), e.String(), err
}

// toolVersion returns the first non-empty line `bin --version` prints.
// A version once read is kept while bin's file stays the same (its
// filestamp.Stamp): the daemon checks QEMU before every VM start, and
// QEMU takes about 50 ms to print its version. A tool that failed runs
// again next time.
func toolVersion(ctx context.Context, bin string) (string, error) {
	st, stErr := filestamp.Path(bin)
	if stErr == nil {
		if v, ok := versions.get(bin, st); ok {
			return v, nil
		}
	}
	v, err := runToolVersion(ctx, bin)
	if err == nil && stErr == nil {
		versions.put(bin, st, v)
	}
	return v, err
}

// runToolVersion runs `bin --version` and returns its first non-empty
// line.
func runToolVersion(ctx context.Context, bin string) (string, error) {
	out, errOut, err := runTool(ctx, bin, "--version")
	if err != nil {
		return "", err
	}
	if l := firstLine(out); l != "" {
		return l, nil
	}
	if l := firstLine(errOut); l != "" {
		return l, nil
	}
	return "", fmt.Errorf("%s --version printed nothing", bin)
}

// versionCache maps a tool's path to the version it printed, with the
// stamp of its file then.
type versionCache struct {
	mu sync.Mutex
	m  map[string]cachedVersion
}

type cachedVersion struct {
	stamp   filestamp.Stamp
	version string
}

var versions versionCache

func (c *versionCache) get(path string, st filestamp.Stamp) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[path]
	return v.version, ok && v.stamp == st
}

func (c *versionCache) put(path string, st filestamp.Stamp, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedVersion{}
	}
	c.m[path] = cachedVersion{stamp: st, version: version}
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}
