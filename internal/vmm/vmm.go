// Package vmm defines the interface every virtual machine monitor driver
// (QEMU, Firecracker) implements, and the types passed across it.
//
// A driver launches a VMM process that must outlive the daemon: the daemon
// persists the returned State as JSON with the VM row and hands it back to
// Recover after a restart.
package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// ErrNotRunning is returned when an operation needs a live VMM process and
// there is none.
var ErrNotRunning = errors.New("vmm process is not running")

// ErrUnsupported is returned by optional abilities a driver lacks.
var ErrUnsupported = errors.New("not supported by this vmm driver")

// Spec is everything a driver needs to launch one VM. Paths are absolute.
type Spec struct {
	ID   string // stable VM id, [a-z0-9-]
	Name string
	Dir  string // the VM's private folder; the driver's sockets and files go here

	CPUs      int
	MemoryMiB int

	Kernel     string // uncompressed vmlinux
	Initrd     string // optional
	KernelArgs string // complete kernel command line

	Disk string // raw ext4 root disk, read-write (a qcow2 overlay with DiskBacking)
	// DiskBacking, when set, makes Disk a qcow2 overlay (made by
	// Overlayer.CreateOverlay) whose backing file is this raw disk: a
	// warm template's, shared by its clones, opened read-only and never
	// written. Only a driver that is an Overlayer takes it.
	DiskBacking string

	TAP string // host TAP device, already created and up
	MAC string // guest MAC, "52:54:00:xx:xx:xx"

	ConsoleLog string // serial console is appended here

	// Accel is "kvm" or "tcg" (QEMU only).
	Accel string

	// Agent asks for a channel to banger's guest agent that does not
	// depend on the guest network: a virtio-serial port under QEMU, a vsock
	// device under Firecracker. The driver puts its host-side Unix socket
	// in Dir and records it in State.AgentSocket.
	Agent bool

	// VsockCID is the guest's vsock context id (>= 3) for drivers that
	// use one (see VsockUser); 0 otherwise.
	VsockCID uint32

	// MemoryFile, when set, backs guest RAM with this file (a template's
	// RAM) instead of anonymous memory; it must be exactly MemoryMiB long.
	// The VMM maps it shared when MemoryShared (the guest writes go to the
	// file: a template being built), else privately, copy on write (a
	// clone: the file is never written). A daemon passes a sealed memfd as
	// /proc/self/fd/N, which no VMM can write (see package template docs).
	MemoryFile   string
	MemoryShared bool
	// IncomingState, when set, is a device state saved by
	// Snapshotter.SaveState: the VMM loads it instead of booting the
	// kernel, and Start returns once the guest runs on from where the
	// state was saved. MemoryFile must then hold the RAM saved with it.
	IncomingState string
	// DetachedNIC gives the guest its network device without a host side
	// (TAP must be empty): a template's, whose clones each get their own
	// TAP and identity.
	DetachedNIC bool

	// RunAs is the user the VMM process runs as, from its first
	// instruction; nil runs it as the daemon's own user. A root daemon
	// gives every running VM ids of its own (see package subid), so that a
	// VMM escape is neither host root nor another VM.
	RunAs *Identity

	// Shares are host folders the guest mounts through virtio-fs (a
	// FolderSharer driver only).
	Shares []Share
}

// Share is one shared folder of a Spec.
type Share struct {
	// Tag is the virtio-fs tag the guest mounts it by.
	Tag string
	// HostDir is the folder, absolute; ReadOnly refuses the guest's
	// writes below the guest.
	HostDir  string
	ReadOnly bool
	// UID and GID own the folder: the guest's root is them in the share.
	UID, GID int
}

// Identity is a uid and gid a VMM process runs as.
type Identity struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Self is the daemon's own identity.
func Self() Identity { return Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())} }

// String reads "uid 2147549184 gid 2147549184".
func (id Identity) String() string { return fmt.Sprintf("uid %d gid %d", id.UID, id.GID) }

// StateVersion is the version of the persisted State layout. A daemon
// reads the versions from 1 to StateVersion; a later one was written by a
// newer daemon and may mean things this one does not know.
const StateVersion = 1

// ErrUnreadableState is wrapped by DecodeState's error: the persisted state
// does not decode, or has a version this daemon does not know.
var ErrUnreadableState = errors.New("vmm state unreadable")

// DecodeState decodes a persisted State. A blob that is not a State, or
// whose Version is outside 1..StateVersion, is an error wrapping
// ErrUnreadableState that says which: a caller must then leave the VM
// alone (its VMM may well be running), not take it for stopped.
func DecodeState(b []byte) (State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("%w: %v", ErrUnreadableState, err)
	}
	if st.Version < 1 || st.Version > StateVersion {
		return State{}, fmt.Errorf("%w: version %d (driver %q), this bangerd reads versions 1 to %d: it was written by another (newer?) bangerd",
			ErrUnreadableState, st.Version, st.Driver, StateVersion)
	}
	return st, nil
}

// State is what a driver needs to find and control a running VMM again after a
// daemon restart. It is stored as JSON; fields are added, never renamed.
type State struct {
	Version   int    `json:"version"`
	Driver    string `json:"driver"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22; guards against pid reuse
	// ControlSocket is QMP for QEMU, the API socket for Firecracker.
	ControlSocket string `json:"control_socket,omitempty"`
	AgentSocket   string `json:"agent_socket,omitempty"`
	ConsoleLog    string `json:"console_log,omitempty"`
	TAP           string `json:"tap,omitempty"`
	Accel         string `json:"accel,omitempty"`
	// Argv is the exact command line that launched the VMM, for `vm show` and bench/.
	Argv []string `json:"argv,omitempty"`
	// VsockCID is the guest CID of the vsock device, 0 when there is none.
	VsockCID uint32 `json:"vsock_cid,omitempty"`
	// RunAs is the uid and gid the VMM runs as; nil in states written
	// before banger recorded it.
	RunAs *Identity `json:"run_as,omitempty"`
	// Chroot is the VMM's chroot when a jailer launched it (Firecracker's:
	// <base>/firecracker/<id>/root), and Cgroups the cgroup folders the
	// jailer made for it; the driver removes both once the VMM is gone.
	Chroot  string   `json:"chroot,omitempty"`
	Cgroups []string `json:"cgroups,omitempty"`
	// SaveMemory is where Snapshotter.SaveState puts the guest's RAM when
	// the VMM could not map Spec.MemoryFile shared (Firecracker, whose
	// guest RAM is its own until a snapshot writes it out): that
	// MemoryFile, while a template is built.
	SaveMemory string `json:"save_memory,omitempty"`
	// Notes are facts worth showing the user, e.g. which descriptor is which file.
	Notes []string `json:"notes,omitempty"`
}

// Driver launches and controls VMM processes.
type Driver interface {
	// Name is "qemu" or "firecracker".
	Name() string
	// Start launches the VMM for spec and returns once the process runs and
	// its control socket answers. On error nothing is left running.
	Start(ctx context.Context, spec Spec) (State, error)
	// Stop asks the guest to power off, waits up to timeout, then kills the
	// process; with force it kills at once. Sockets and pid files are removed.
	// Stopping a VMM that is not running returns nil.
	Stop(ctx context.Context, st State, force bool, timeout time.Duration) error
	// Alive reports whether the process recorded in st is still the VMM we
	// launched (pid alive and start time unchanged).
	Alive(st State) bool
	// Recover reattaches to a VMM after a daemon restart; it returns
	// ErrNotRunning when the process is gone.
	Recover(ctx context.Context, st State) error
}

// Optional abilities. A driver implements only the ones it has; callers
// check with a type assertion (or the helpers below, which return an error
// wrapping ErrUnsupported when the ability is absent) and never ask which
// driver they hold.

// AgentDialer is the ability to reach banger's guest agent (package agent)
// over a channel that does not depend on the guest network: a virtio-serial
// port under QEMU, the hybrid vsock socket under Firecracker.
type AgentDialer interface {
	// DialAgent connects to the guest agent of the running VM st. The
	// connection carries the agent protocol and may be kept for further
	// requests. The error wraps ErrUnsupported when st has no agent
	// channel.
	DialAgent(ctx context.Context, st State) (net.Conn, error)
	// AgentChannel names the transport for users ("virtio-serial", "vsock").
	AgentChannel() string
}

// DialAgent connects to the guest agent of st through d, or returns an
// error wrapping ErrUnsupported when d cannot reach guest agents.
func DialAgent(ctx context.Context, d Driver, st State) (net.Conn, error) {
	a, ok := d.(AgentDialer)
	if !ok {
		return nil, fmt.Errorf("reach the guest agent: %s: %w", d.Name(), ErrUnsupported)
	}
	return a.DialAgent(ctx, st)
}

// AgentChannel is d's agent transport, or "" when d has none.
func AgentChannel(d Driver) string {
	if a, ok := d.(AgentDialer); ok {
		return a.AgentChannel()
	}
	return ""
}

// Pauser is the ability to freeze a running guest where it is and to let
// it go on: its vCPUs stop, the VMM process and the guest's memory stay.
// Under QEMU QMP stop, cont and query-status; under Firecracker PATCH /vm
// and GET /.
type Pauser interface {
	// Pause stops the guest's vCPUs; pausing a paused guest succeeds.
	Pause(ctx context.Context, st State) error
	// Resume lets a paused guest run again; resuming a running one succeeds.
	Resume(ctx context.Context, st State) error
	// Paused asks the VMM whether the guest is paused.
	Paused(ctx context.Context, st State) (bool, error)
}

// AsPauser returns d's Pauser, or an error wrapping ErrUnsupported that
// names d when d cannot pause guests.
func AsPauser(d Driver) (Pauser, error) {
	p, ok := d.(Pauser)
	if !ok {
		return nil, fmt.Errorf("%s cannot pause and resume guests: %w", d.Name(), ErrUnsupported)
	}
	return p, nil
}

// VsockUser is the need for a vsock device: every VM of such a driver gets
// one, with guest context id (Spec.VsockCID) GuestCID.
type VsockUser interface {
	// UsesVsock reports whether VMs of this driver need Spec.VsockCID.
	UsesVsock() bool
}

// GuestCID is the vsock context id of every guest that has a vsock device.
// It is the guest's own address, which no host program uses: a VsockUser's
// vsock is hybrid (Firecracker's), the host reaching each guest through a
// Unix socket in its VM's folder, so guests with one CID cannot collide on
// the host. The same CID everywhere is also the truth for a clone, which
// keeps its template's (a snapshot load cannot change it; Firecracker's
// vsock_override changes only the host socket). 0-2 are reserved
// (hypervisor, local, host).
const GuestCID uint32 = 3

// UsesVsock reports whether VMs of d need a vsock context id.
func UsesVsock(d Driver) bool {
	v, ok := d.(VsockUser)
	return ok && v.UsesVsock()
}

// FolderSharer is the ability to share host folders with the guest
// (Spec.Shares, through virtio-fs).
type FolderSharer interface {
	// SharesFolders reports whether VMs of this driver can have Shares.
	SharesFolders() bool
}

// SharesFolders reports whether VMs of d can have shared folders.
func SharesFolders(d Driver) bool {
	f, ok := d.(FolderSharer)
	return ok && f.SharesFolders()
}

// Snapshotter is the ability to make warm templates: save a running VM's
// device state, and load it into a new VMM (Spec.IncomingState) whose
// guest RAM is the template's file (Spec.MemoryFile).
type Snapshotter interface {
	// MachineKey identifies the machine that spec describes, as far as a
	// saved state depends on it: the VMM build (binary identity), the
	// accelerator, CPU model, CPU count, memory size and the device
	// command line. A state saved by one VMM loads only into one whose key
	// is equal. Per-VM parts (names, paths, MAC, TAP, the kernel command
	// line) do not count; the kernel's identity does.
	MachineKey(spec Spec) (string, error)
	// SaveState pauses the running VM st and writes its device state
	// (not its RAM, which is Spec.MemoryFile's, mapped shared) to f. The
	// VM stays paused; the caller stops it.
	SaveState(ctx context.Context, st State, f *os.File) error
}

// SnapshotFiler is the need of a Snapshotter whose VMM opens a clone's
// saved state and RAM by path from its own sandbox (Firecracker in its
// jail) and saves its network device with its host side: a clone's
// Spec.MemoryFile is then the template's RAM file itself, which (with the
// state) must be readable, never writable, by the VMM users; and a
// template is built with a TAP of its own (no Spec.DetachedNIC), which
// each clone's replaces.
type SnapshotFiler interface {
	// SnapshotsByPath reports whether the driver has this need.
	SnapshotsByPath() bool
}

// SnapshotsByPath reports whether d is a SnapshotFiler that has the need.
func SnapshotsByPath(d Driver) bool {
	f, ok := d.(SnapshotFiler)
	return ok && f.SnapshotsByPath()
}

// DiskAliaser is the ability of a driver whose VMM may hold the VM's disk
// under another name than its host path: a jailed VMM names it by its path
// in its chroot. Finding a VMM no record names by the disk it holds
// (proc.Holding) needs those names.
type DiskAliaser interface {
	// DiskAliases are the names a VMM of this driver may give the disk.
	DiskAliases() []string
}

// DiskAliases are the disk aliases of every driver in drivers.
func DiskAliases(drivers map[string]Driver) []string {
	var out []string
	for _, d := range drivers {
		if a, ok := d.(DiskAliaser); ok {
			out = append(out, a.DiskAliases()...)
		}
	}
	return out
}

// LaunchEnder is the need of a driver whose VMM runs, from its launch on,
// without holding the VM's disk (a jailed Firecracker opens it only at
// InstanceStart or a snapshot load), so that the VMM of a launch no state
// records cannot be found by its disk (see proc.Holding).
type LaunchEnder interface {
	// EndLaunch kills the VMM a launch of VM id left running unrecorded,
	// if any, and waits until it is gone; it returns how many processes it
	// killed.
	EndLaunch(ctx context.Context, id string) (int, error)
}

// Sweeper is the ability of a driver that keeps things for a VMM outside
// the VM's folder (Firecracker's jail: a chroot and cgroups), which a
// daemon killed at the wrong moment, or a VM removed after it, leaves
// behind.
type Sweeper interface {
	// Sweep removes what the driver keeps for every VM whose id running
	// does not hold (whose VMM does not run). It runs at daemon start,
	// before any request.
	Sweep(ctx context.Context, running map[string]bool) error
}

// Overlayer is the ability to boot a VM from a copy-on-write overlay of
// a read-only raw disk (Spec.DiskBacking): a clone of a warm template
// then needs no copy of the template's disk.
type Overlayer interface {
	// CreateOverlay makes overlay, a new, empty copy-on-write disk of size
	// bytes on top of the raw disk backing, which it does not open.
	CreateOverlay(ctx context.Context, overlay, backing string, size int64) error
}

// Preflighter is the ability to name the host checks (the purpose of
// package doctor, as a string so that this package does not depend on it)
// that starting a VM under this driver needs beyond those of every VM start.
type Preflighter interface {
	// PreflightPurpose is the doctor purpose of a VM start under this
	// driver, for example "firecracker".
	PreflightPurpose() string
}

// PreflightPurpose is d's doctor purpose, or def when d names none.
func PreflightPurpose(d Driver, def string) string {
	if p, ok := d.(Preflighter); ok {
		return p.PreflightPurpose()
	}
	return def
}
