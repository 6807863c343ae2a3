// Package daemon is bangerd: it owns the store, the VMM drivers and the host
// network, and serves the JSON-RPC method table on a Unix socket that only
// its own user may use.
//
// VMM processes are not children the daemon waits on: they outlive it, and
// a new daemon re-adopts them (see vm.Service.Recover).
package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/imagesvc"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/safesocket"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/sshkey"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/units"
	"github.com/bangerhq/banger/internal/version"
	"github.com/bangerhq/banger/internal/vm"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/drivers"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// Daemon is one running bangerd.
type Daemon struct {
	dirs    paths.Dirs
	cfg     config.Config
	runtime bundle.Dir
	log     *slog.Logger
	store   *store.Store
	vms     *vm.Service
	images  *imagesvc.Service
	accel   string // kvm or tcg, chosen at start
	net     *hostNet
	names   *vmNames
	info    api.DaemonInfo
	started time.Time

	stopOnce sync.Once
	stop     chan struct{}
}

// Shutdown timing: in-flight requests get requestGrace to finish, then
// their contexts are cancelled (a boot or build in progress is undone, as
// when its client hangs up) and they get requestDrain more to return.
var (
	requestGrace = 5 * time.Second
	requestDrain = 30 * time.Second
)

// Run starts the daemon and serves until ctx is cancelled or a client calls
// daemon.stop. Running VMs keep running when it returns. It returns only
// after the requests and monitors it started have ended (or requestDrain
// ran out, which it logs), so nothing writes to the store after it closes.
func Run(ctx context.Context, log *slog.Logger) error {
	d, ln, err := setup(ctx, log)
	if err != nil {
		return err
	}
	defer d.store.Close()
	defer os.Remove(d.dirs.PIDFile())

	methods := d.methods()
	srv := &rpcServer{methods: methods, info: d.info, log: log.With("component", "rpc"), uid: os.Getuid()}
	// Requests outlive ctx by the grace period: they get their own context.
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	serveErr := make(chan error, 1)
	served := make(chan struct{})
	go func() { serveErr <- srv.serve(reqCtx, ln); close(served) }()
	log.Info("bangerd ready", "socket", d.dirs.Socket(), "version", d.info.Version, "pid", d.info.PID,
		"subnet", d.net.policy.Subnet, "accel", d.vmsAccel(), "runtime", d.runtime.Path)

	select {
	case <-ctx.Done():
	case <-d.stop:
	case err := <-serveErr:
		if err != nil {
			log.Error("serve", "err", err)
		}
	}
	ln.Close()
	os.Remove(d.dirs.Socket())
	<-served // no connection is added to srv.wg after this
	if !srv.drain(requestGrace, requestDrain, cancelRequests) {
		log.Error("requests did not end after being cancelled; closing the store under them", "waited", requestDrain)
	}
	d.vms.Shutdown()
	d.names.close()
	log.Info("bangerd stopped")
	return nil
}

func (d *Daemon) vmsAccel() string { return d.accel }

// setup prepares everything and returns the listening socket.
func setup(ctx context.Context, log *slog.Logger) (*Daemon, *net.UnixListener, error) {
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, nil, err
	}
	if err := dirs.Ensure(); err != nil {
		return nil, nil, err
	}
	if err := paths.CheckSocketPath(dirs.Socket()); err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return nil, nil, err
	}
	exe, _ := os.Executable()
	d := &Daemon{
		dirs: dirs, cfg: cfg, log: log, started: time.Now(), stop: make(chan struct{}),
		runtime: bundle.Resolve(cfg.Runtime.Dir),
		info: api.DaemonInfo{Version: version.String(), PID: os.Getpid(), Executable: exe,
			ExecutableID: version.ExecutableID(exe)},
	}
	ln, err := listen(dirs.Socket())
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*Daemon, *net.UnixListener, error) {
		ln.Close()
		os.Remove(dirs.Socket())
		return nil, nil, err
	}
	if err := atomicfile.WriteFile(dirs.PIDFile(), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		return fail(err)
	}
	// The processes of this daemon's build sandboxes carry its token, so
	// the next daemon finds what this one leaves running (sweep).
	if err := sandbox.SetOwner(ownerToken(dirs)); err != nil {
		return fail(err)
	}

	if d.store, err = store.Open(ctx, dirs.Database()); err != nil {
		return fail(err)
	}
	pub, err := sshkey.Ensure(dirs.SSHKey(), "bangerd")
	if err != nil {
		return fail(err)
	}
	subnet, err := d.resolveSubnet(ctx)
	if err != nil {
		return fail(err)
	}
	bridge := cfg.Network.Bridge
	if bridge == "" {
		bridge = "banger0"
	}
	d.net = newHostNet(guestPolicy(cfg.Network, bridge, subnet), log.With("component", "network"))

	accel, err := d.resolveAccel(ctx)
	if err != nil {
		return fail(err)
	}
	drv := drivers.Load(drivers.Options{QEMU: cfg.VMM.QEMU, RuntimeDir: d.runtime.Path,
		Default: cfg.VMM.Default, Accel: accel, Log: log,
		FirecrackerSimulator: os.Getenv("BANGER_FIRECRACKER_SIMULATOR"),
		JailerSimulator:      os.Getenv("BANGER_JAILER_SIMULATOR"),
		ChrootBase:           filepath.Join(dirs.State, "jailer")})
	log.Info("default vmm", "vmm", drv.Default, "why", drv.Why)
	d.vms = vm.New(vm.Config{
		Dirs: dirs, Runtime: d.runtime, Bridge: bridge, Subnet: subnet,
		// Guests ask bangerd's own DNS server (NAME.banger.internal, and
		// everything else forwarded) unless the config names another.
		DNS:   firstNonEmpty(cfg.Network.DNS, network.Gateway(subnet).String()),
		Accel: accel, VMMIDs: vmmIDs(),
		DefaultVMM: drv.Default, DefaultImage: firstNonEmpty(cfg.VM.Image, "default"),
		DefaultCPUs: firstPositive(cfg.VM.CPUs, 2), DefaultMemoryMiB: firstPositive(cfg.VM.MemoryMiB, 1024),
		DefaultDiskBytes: 4 << 30,
		BootTimeout:      durationEnv("BANGER_BOOT_TIMEOUT", 180*time.Second),
		StallTimeout:     durationEnv("BANGER_STALL_TIMEOUT", 45*time.Second),
		StopTimeout:      durationEnv("BANGER_STOP_TIMEOUT", 30*time.Second),
		AgentTimeout:     durationEnv("BANGER_AGENT_TIMEOUT", 60*time.Second),
		SSHPublicKey:     pub,
		Preflight:        d.preflight,
	}, d.store, drv.Drivers, d.net, log)
	d.names = newVMNames(bridge, subnet, d.vms.Names(), log.With("component", "dns"))
	d.net.onBridge = d.names.bridgeReady
	d.accel = accel
	limits := tarlimit.Limits{MaxFiles: cfg.Image.MaxFiles}
	if v := cfg.Image.MaxSize; v != "" {
		limits.MaxBytes, _ = units.ParseSize(v) // checked when the config was loaded
	}
	d.images = imagesvc.New(imagesvc.Config{
		Dirs: dirs, Runtime: d.runtime, SSHPublicKey: pub, Owner: ownerToken(dirs),
		Limits: limits, DNS: cfg.Network.DNS,
		Bridge: d.net.policy.Bridge, Subnet: d.net.policy.Subnet, Network: d.net,
		Preflight: func(ctx context.Context) error {
			return doctor.Preflight(ctx, d.doctorEnv(), doctor.PurposeImageBuild)
		},
	}, d.store, log)
	if err := d.vms.Recover(ctx); err != nil {
		return fail(fmt.Errorf("recover vms: %w", err))
	}
	if err := d.net.restore(); err != nil {
		return fail(err)
	}
	d.images.Sweep(ctx)
	return d, ln, nil
}

// ownerToken names this daemon's sandboxes: a hash of its state folder, so
// a daemon of another user, or of another XDG state folder, has another.
func ownerToken(dirs paths.Dirs) string {
	sum := sha256.Sum256([]byte(dirs.State))
	return "bgr-" + hex.EncodeToString(sum[:8])
}

// firstVMMUser is the first user a root daemon runs VMMs as (all of them
// are alike for device access), nil when the daemon runs them as itself or
// has no ids for them (preflight says so).
func firstVMMUser() *vmm.Identity {
	f := vmmIDs()
	if f == nil {
		return nil
	}
	ids, err := f()
	if err != nil {
		return nil
	}
	uid, gid, err := ids.VMM(0)
	if err != nil {
		return nil
	}
	return &vmm.Identity{UID: uid, GID: gid}
}

// vmmIDs is how a root daemon finds the ids its VMMs run as (root's
// subordinate ids, see subid); a daemon that is not root runs them as
// itself.
func vmmIDs() func() (subid.IDs, error) {
	if os.Geteuid() != 0 {
		return nil
	}
	return func() (subid.IDs, error) { return subid.Lookup(subid.System, "root", 0) }
}

// listen binds the daemon's socket with mode 0600, replacing a stale one;
// one that answers means another daemon runs.
func listen(sock string) (*net.UnixListener, error) {
	ln, err := safesocket.Listen(sock, "another bangerd")
	if errors.Is(err, safesocket.ErrInUse) {
		return nil, fmt.Errorf("another bangerd is already listening on %s: stop it with `banger daemon stop`", sock)
	}
	return ln, err
}

// resolveSubnet returns the VM subnet: the configured one, else the one
// chosen earlier (kept in settings so leases stay valid), else the first
// candidate that collides with no host route.
func (d *Daemon) resolveSubnet(ctx context.Context) (netip.Prefix, error) {
	if s := d.cfg.Network.Subnet; s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p.Bits() > 29 {
			return netip.Prefix{}, fmt.Errorf("config network.subnet = %q: want an IPv4 prefix such as 172.30.0.0/24", s)
		}
		return p.Masked(), nil
	}
	if v, err := store.GetSetting(ctx, d.store.DB, "network.subnet"); err == nil {
		if p, err := netip.ParsePrefix(v); err == nil {
			return p, nil
		}
	}
	// A bridge left by an earlier daemon keeps its subnet (HostPrefixes
	// would count it as taken and move away from it).
	bridge := firstNonEmpty(d.cfg.Network.Bridge, "banger0")
	if p, ok, err := network.BridgeSubnet(bridge); err == nil && ok {
		return p, store.SetSetting(ctx, d.store.DB, "network.subnet", p.String())
	}
	existing, err := network.HostPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := network.ChooseSubnet(existing, network.DefaultCandidates())
	if err != nil {
		return netip.Prefix{}, err
	}
	if err := store.SetSetting(ctx, d.store.DB, "network.subnet", p.String()); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// resolveAccel picks kvm or tcg: $BANGER_ACCEL, then vmm.accel, then a boot
// probe (cached) that tells whether KVM can really run a guest here.
func (d *Daemon) resolveAccel(ctx context.Context) (string, error) {
	override := os.Getenv("BANGER_ACCEL")
	if override == "" {
		override = d.cfg.VMM.Accel
	}
	c, err := qemu.ResolveAccel(ctx, qemu.AccelOptions{
		Override: override,
		Binary:   d.cfg.VMM.QEMU,
		Kernel:   d.runtime.Kernel(),
		Initrd:   d.runtime.Initrd(),
		Cache:    filepath.Join(d.dirs.State, "accel-probe.json"),
		RunAs:    firstVMMUser(),
		Log:      d.log,
	})
	return c.Accel, err
}

// doctorEnv is the host-check environment for preflight.
func (d *Daemon) doctorEnv() *doctor.Env {
	env := doctor.NewEnv(d.dirs, d.cfg)
	env.Runtime = d.runtime
	// A tampered or half-installed bundle stops vm create/start and image
	// build early, naming the file and the fix (hashes are cached by stat).
	env.VerifyRuntime = bundle.Verify
	return env
}

// preflight runs the host checks a VM start under drv needs: those of
// every VM start, or those of the purpose the driver names.
func (d *Daemon) preflight(ctx context.Context, drv vmm.Driver) error {
	purpose := doctor.Purpose(vmm.PreflightPurpose(drv, string(doctor.PurposeVMStart)))
	env := d.doctorEnv()
	env.VerifyRuntime = bundle.VerifyVMStart // not the modules a start never reads
	if err := doctor.Preflight(ctx, env, purpose); err != nil {
		return api.Errorf(api.ErrPrecondition, "%w", err)
	}
	return nil
}

func (d *Daemon) requestStop() { d.stopOnce.Do(func() { close(d.stop) }) }

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func firstPositive(a, b int) int {
	if a > 0 {
		return a
	}
	return b
}

func durationEnv(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}
