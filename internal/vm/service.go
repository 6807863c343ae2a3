// Package vm is the VM service: it creates, starts, stops, restarts and
// deletes VMs, derives their observed state, re-adopts running VMMs after a
// daemon restart and notices VMMs that die.
//
// Each operation does its database write and its disk or host work as one
// unit: when a later step fails, the earlier ones are undone, so a failed
// request leaves no row, folder, TAP device or process behind.
package vm

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/portfwd"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm"
)

// Config is what the service needs from the daemon. The daemon resolves it
// once at start.
type Config struct {
	Dirs    paths.Dirs
	Runtime bundle.Dir
	Bridge  string
	Subnet  netip.Prefix
	DNS     string
	Accel   string // "kvm" or "tcg"

	DefaultVMM       string
	DefaultImage     string
	DefaultCPUs      int
	DefaultMemoryMiB int
	DefaultDiskBytes int64

	// BootTimeout bounds the wait for SSH; StallTimeout fails a boot early
	// when the serial console stops growing; StopTimeout is the graceful
	// shutdown window before the VMM is killed.
	BootTimeout  time.Duration
	StallTimeout time.Duration
	StopTimeout  time.Duration
	// AgentTimeout bounds the wait for the guest agent once SSH answers.
	AgentTimeout time.Duration
	// SSHPublicKey is the daemon's public key, installed in every VM.
	SSHPublicKey string
	// VMMIDs returns the subordinate ids a root daemon runs VMMs as, one
	// uid and gid per running VM (see subid); nil runs every VMM as the
	// daemon's own user.
	VMMIDs func() (subid.IDs, error)
	// Preflight runs the host checks a start under drv needs (`banger
	// doctor`'s, shared; see vmm.Preflighter); nil skips them.
	Preflight func(ctx context.Context, drv vmm.Driver) error
}

// Network is the host networking the service needs. The daemon passes the
// real implementation (package network); it is an interface only so the
// create/delete paths that need no privilege can be tested without root.
type Network interface {
	// EnsureBridge makes the bridge, NAT and guest network policy current.
	EnsureBridge(ctx context.Context) error
	// CreateTAP creates a VM's TAP device, owned by owner (the user its
	// VMM runs as), and guards it: the VM may send only from mac and ip
	// (its lease). On error nothing is left.
	CreateTAP(name, mac, ip string, owner vmm.Identity) error
	// CreateDetachedTAP creates a TAP device owned by owner on no bridge
	// and down: it carries nothing (a template's, whose VMM needs one).
	CreateDetachedTAP(name string, owner vmm.Identity) error
	// DeleteTAP deletes the TAP device and its guard.
	DeleteTAP(name string) error
	TAPExists(name string) bool
	// AdoptTAP keeps the guard of a running VM's TAP across a daemon
	// restart (the policy is rebuilt after Recover).
	AdoptTAP(name, mac, ip string) error
}

// Service implements the VM methods of the daemon.
type Service struct {
	cfg     Config
	store   *store.Store
	drivers map[string]vmm.Driver
	net     Network
	log     *slog.Logger

	mu  sync.Mutex
	ops map[string]*vmOp // by VM id
	// links are the sessions to guest agents, by agent socket path.
	links map[string]*agentLink
	// clocks are the last clock offset measured per VM id.
	clocks map[string]clockSample
	// fwd listens on the port forwards of running VMs; fwdErrs says, by
	// VM id and spec, why one did not open at the VM's start.
	fwd     *portfwd.Manager
	fwdErrs map[string]map[string]string
	// monitors counts the running monitor goroutines; Shutdown waits for
	// them, so none writes to the store after the daemon closes it.
	monitors sync.WaitGroup
	// closed is set by Shutdown (guarded by mu): no monitor starts after.
	closed bool
	// vmmUIDs are the VMM uids reserved by starts in progress, by VM id.
	vmmUIDs map[string]uint32
	// paused is what each VM's VMM last said about pausing, by VM id
	// (see pause.go).
	paused map[string]pauseSeen

	// tplMem are the sealed memfds of the templates' RAM, by template
	// key, loaded on first use (see template.go).
	tplMu  sync.Mutex
	tplMem map[string]*os.File
}

// vmOp serialises operations on one VM and records the one in progress.
type vmOp struct {
	// held has one token while an operation runs on the VM (a mutex that
	// a waiter can give up on: see lockCtx).
	held    chan struct{}
	current string // "", api.StateStarting, api.StateStopping; guarded by Service.mu
	monitor context.CancelFunc
}

// New returns a service. drivers maps VMM names ("qemu") to drivers.
func New(cfg Config, st *store.Store, drivers map[string]vmm.Driver, net Network, log *slog.Logger) *Service {
	return &Service{cfg: cfg, store: st, drivers: drivers, net: net, log: log.With("component", "vm"), ops: map[string]*vmOp{},
		fwd: portfwd.NewManager(log)}
}

// lock takes the operation lock of VM id and marks op in progress; the
// returned func releases it and may be called more than once, so callers
// can defer it and still release early (before computing the final view,
// which must not show the finished operation as in progress).
func (s *Service) lock(id, op string) func() {
	unlock, _ := s.lockCtx(context.Background(), id, op)
	return unlock
}

// lockCtx is lock that gives up when ctx ends first, with ctx's error.
func (s *Service) lockCtx(ctx context.Context, id, op string) (func(), error) {
	s.mu.Lock()
	o := s.opLocked(id)
	s.mu.Unlock()
	select {
	case o.held <- struct{}{}:
	case <-ctx.Done():
		return func() {}, ctx.Err()
	}
	s.setOp(id, op)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.setOp(id, "")
			<-o.held
		})
	}, nil
}

// opLocked returns the operation record of VM id, making it when absent.
// The caller holds s.mu.
func (s *Service) opLocked(id string) *vmOp {
	o := s.ops[id]
	if o == nil {
		o = &vmOp{held: make(chan struct{}, 1)}
		s.ops[id] = o
	}
	return o
}

func (s *Service) setOp(id, op string) {
	s.mu.Lock()
	if o := s.ops[id]; o != nil {
		o.current = op
	}
	s.mu.Unlock()
}

func (s *Service) currentOp(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.ops[id]; o != nil {
		return o.current
	}
	return ""
}

// driverState decodes the row's driver state: ok is false when the row
// records no launched VMM. A state that does not decode, or that a newer
// daemon wrote (see vmm.DecodeState), is an error: the VM must then be left
// alone, since its VMM may well be running.
func driverState(vm store.VM) (st vmm.State, ok bool, err error) {
	if vm.DriverState == "" {
		return vmm.State{}, false, nil
	}
	st, err = vmm.DecodeState([]byte(vm.DriverState))
	if err != nil {
		return vmm.State{}, false, err
	}
	return st, st.PID > 0, nil
}

// untouchable is the error of an operation refused because the VM's driver
// state cannot be read.
func untouchable(name string, err error) error {
	return api.Errorf(api.ErrPrecondition, "VM %q: %v: banger leaves it alone (its VMM may be running); use the bangerd that started it", name, err)
}

// facts observes one VM.
func (s *Service) facts(vm store.VM) (Facts, vmm.State) {
	st, has, err := driverState(vm)
	f := Facts{Desired: vm.DesiredState, Op: s.currentOp(vm.ID), HasDriverState: has, StateUnreadable: err != nil}
	if d, ok := s.drivers[vm.VMM]; ok {
		f.DriverKnown = true
		if has {
			f.ProcessAlive = d.Alive(st)
			f.Paused = f.ProcessAlive && s.isPaused(vm.ID, st)
		}
	}
	return f, st
}

// imageLabel is the name of the VM's image as users see it: a tombstone
// left by `image rm --force` is named NAME@ID in the store and shown as
// "NAME (removed)".
func imageLabel(vm store.VM) string {
	if name, ok := strings.CutSuffix(vm.ImageName, "@"+vm.ImageID); ok {
		return name + " (removed)"
	}
	return vm.ImageName
}

// view turns a row into what users see.
func (s *Service) view(vm store.VM) api.VM {
	f, st := s.facts(vm)
	out := api.VM{
		ID: vm.ID, Name: vm.Name, State: DeriveState(f), DesiredState: vm.DesiredState,
		IP: vm.IP, MAC: vm.MAC, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes,
		Image: imageLabel(vm), VMM: vm.VMM, Kernel: vm.Kernel, KernelArgs: vm.KernelArgs,
		Dir: s.cfg.Dirs.VMDir(vm.ID), ConsoleLog: s.consoleLog(vm.ID), LastError: vm.LastError,
		CreatedAt: vm.CreatedAt, UpdatedAt: vm.UpdatedAt,
	}
	out.VsockCID = vm.VsockCID
	if f.HasDriverState {
		out.PID, out.TAP, out.Accel, out.Argv = st.PID, st.TAP, st.Accel, st.Argv
		out.AgentSocket, out.Notes = st.AgentSocket, st.Notes
		if st.RunAs != nil {
			out.VMMUser = st.RunAs.String()
		}
	}
	if _, _, err := driverState(vm); err != nil {
		out.Notes = append(out.Notes, untouchable(vm.Name, err).Error())
	}
	if (out.State == api.StateRunning || out.State == api.StatePaused) && !vm.StartedAt.IsZero() {
		t := vm.StartedAt
		out.StartedAt = &t
	}
	if c, ok := s.lastClock(vm.ID); ok && out.State == api.StateRunning && c.at.After(vm.StartedAt) {
		off, at := millis(c.offset), c.at
		out.ClockOffsetMillis, out.ClockMeasuredAt = &off, &at
	}
	return out
}

// List returns every VM with its derived state.
func (s *Service) List(ctx context.Context) ([]api.VM, error) {
	rows, err := store.ListVMs(ctx, s.store.DB)
	if err != nil {
		return nil, err
	}
	fwds, err := store.ListForwards(ctx, s.store.DB, "")
	if err != nil {
		return nil, err
	}
	byVM := map[string][]store.Forward{}
	for _, f := range fwds {
		byVM[f.VMID] = append(byVM[f.VMID], f)
	}
	out := make([]api.VM, 0, len(rows))
	for _, r := range rows {
		v := s.view(r)
		if f := byVM[r.ID]; len(f) > 0 {
			v.Forwards = s.forwardViews(r.ID, f)
		}
		out = append(out, v)
	}
	return out, nil
}

// Get returns one VM by name or id; ErrNotFound when absent.
func (s *Service) Get(ctx context.Context, ref string) (api.VM, error) {
	row, err := s.get(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	return s.viewFull(ctx, row)
}

func (s *Service) get(ctx context.Context, ref string) (store.VM, error) {
	if ref == "" {
		return store.VM{}, api.Errorf(api.ErrInvalid, "missing VM name")
	}
	row, err := store.GetVM(ctx, s.store.DB, ref)
	if err != nil {
		if isNotFound(err) {
			return row, api.Errorf(api.ErrNotFound, "no VM named %q: see `banger vm ls`", ref)
		}
		return row, err
	}
	return row, nil
}

// Counts returns the number of VMs and of running VMs. It observes only
// the rows that record a launched VMM, so daemon.status stays cheap with
// many VMs.
func (s *Service) Counts(ctx context.Context) (total, running int) {
	if err := s.store.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM vms").Scan(&total); err != nil {
		return 0, 0
	}
	rows, err := store.ListVMsWithDriverState(ctx, s.store.DB)
	if err != nil {
		return total, 0
	}
	for _, r := range rows {
		if f, _ := s.facts(r); DeriveState(f) == api.StateRunning {
			running++
		}
	}
	return total, running
}

// SSHInfo tells the CLI how to reach a running VM.
func (s *Service) SSHInfo(ctx context.Context, ref string) (api.SSHInfo, error) {
	row, _, err := s.runningState(ctx, ref)
	if err != nil {
		return api.SSHInfo{}, err
	}
	return api.SSHInfo{
		User: "root", Host: row.IP, Port: 22,
		IdentityFile:   s.cfg.Dirs.SSHKey(),
		KnownHostsFile: s.knownHosts(row.ID),
		HostKeyAlias:   row.IP,
	}, nil
}

func (s *Service) consoleLog(id string) string { return s.cfg.Dirs.VMDir(id) + "/console.log" }
func (s *Service) diskPath(id string) string   { return s.cfg.Dirs.VMDir(id) + "/disk.ext4" }
func (s *Service) knownHosts(id string) string { return s.cfg.Dirs.VMDir(id) + "/known_hosts" }

// hostMemoryMiB reads MemTotal from /proc/meminfo.
func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int
	fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
	return kb / 1024
}
