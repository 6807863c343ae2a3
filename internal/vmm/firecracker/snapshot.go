package firecracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// Warm templates under Firecracker (vmm.Snapshotter). Firecracker cannot
// boot a guest on a memory file, so a template is booted as any VM (its
// RAM Firecracker's own) and Spec.MemoryFile is where SaveState puts that
// RAM (State.SaveMemory): SaveState pauses the guest (PATCH /vm Paused),
// takes a full snapshot (PUT /snapshot/create) into Firecracker's folder
// (its chroot, or its jail folder unjailed), copies the device state to
// the caller's file and the RAM to SaveMemory, and removes both snapshot
// files. A clone (Spec.IncomingState) is a Firecracker that never boots:
// after its logger it is given PUT /snapshot/load, the memory a File
// backend, which Firecracker opens read-only and maps privately (copy on
// write: the file is never written); the clone's own TAP device and vsock
// socket replace the template's (network_overrides, vsock_override),
// kvmclock is advanced to real time (clock_realtime) and the guest
// resumed. Jailed, the state and memory files are hard-linked into the
// chroot (bound across file systems), so they must be readable by the VM's
// user; unjailed they are inherited descriptors. A memfd cannot be
// bind-mounted (the kernel refuses a source outside the mount namespace:
// EINVAL, measured here), so a clone's MemoryFile is a real file.

var (
	_ vmm.Snapshotter   = (*Driver)(nil)
	_ vmm.SnapshotFiler = (*Driver)(nil)
)

// SnapshotsByPath is true: a clone's snapshot files are linked into its
// jail, and a template needs a TAP (see vmm.SnapshotFiler).
func (d *Driver) SnapshotsByPath() bool { return true }

// Snapshot file names in Firecracker's folder (and, jailed, their paths
// in the chroot).
const (
	SnapshotStateName  = "snapshot.state"
	SnapshotMemoryName = "snapshot.mem"
	jailState          = "/" + SnapshotStateName
	jailMemory         = "/" + SnapshotMemoryName
)

// SnapshotCreate returns the body of PUT /snapshot/create: a full snapshot
// into dir (as Firecracker names it: see View), state and memory apart.
func SnapshotCreate(dir string) fcapi.SnapshotCreateParams {
	return fcapi.SnapshotCreateParams{
		SnapshotPath: dir + "/" + SnapshotStateName,
		MemFilePath:  dir + "/" + SnapshotMemoryName,
		SnapshotType: fcapi.SnapshotFull,
	}
}

// SnapshotLoad returns the body of PUT /snapshot/load for the clone spec
// as Firecracker sees it (see View): spec.IncomingState, spec.MemoryFile
// as a private file backend, spec.TAP for the interface, the vsock socket
// in spec.Dir, the clock advanced to real time, and the VM resumed.
func SnapshotLoad(spec vmm.Spec) fcapi.SnapshotLoadParams {
	p := fcapi.SnapshotLoadParams{
		SnapshotPath:  spec.IncomingState,
		MemBackend:    &fcapi.MemoryBackend{BackendType: fcapi.MemBackendFile, BackendPath: spec.MemoryFile},
		ResumeVM:      ptr(true),
		ClockRealtime: ptr(true),
	}
	if spec.TAP != "" {
		p.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: IfaceID, HostDevName: spec.TAP}}
	}
	if spec.VsockCID != 0 {
		p.VsockOverride = &fcapi.VsockOverride{UDSPath: spec.Dir + "/" + VsockSocketName}
	}
	return p
}

// LoadRequests returns the calls Start makes to a clone's fresh
// Firecracker: its logger, then the snapshot load (which starts the
// guest: there is no InstanceStart).
func LoadRequests(spec vmm.Spec) []Request {
	return []Request{
		{"logger", "PUT", "/logger", Logger(spec)},
		{"snapshot load", "PUT", "/snapshot/load", SnapshotLoad(spec)},
	}
}

// MachineKey is the SHA-256 of the Firecracker binary's content (the
// simulator's, for a simulated driver), the kernel's and initrd's, and the
// machine spec describes: vCPUs, memory, and which devices it has (disk,
// network interface, vsock). Per-VM parts (names, paths, MAC, TAP, CID,
// the kernel command line) do not count.
func (d *Driver) MachineKey(spec vmm.Spec) (string, error) {
	bin, err := d.Binary()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "firecracker %s simulator=%v jailed=%v\n", fcapi.Version, d.sim, d.jailer != "")
	if err := vmm.WriteFileSums(h, bin, spec.Kernel, spec.Initrd); err != nil {
		return "", fmt.Errorf("machine key: %w", err)
	}
	fmt.Fprintf(h, "cpus %d memory %d disk %v nic %v vsock %v\n", spec.CPUs, spec.MemoryMiB, spec.Disk != "",
		spec.TAP != "" || spec.DetachedNIC, spec.Agent)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SaveState pauses the guest of st, takes a full snapshot, writes its
// device state to f and its RAM to st.SaveMemory (which must be as long as
// the guest's memory), and removes the snapshot files from Firecracker's
// folder. The VM stays paused; the caller stops it.
func (d *Driver) SaveState(ctx context.Context, st vmm.State, f *os.File) error {
	if err := d.saveState(ctx, st, f); err != nil {
		return fmt.Errorf("save vm state: %w", err)
	}
	return nil
}

func (d *Driver) saveState(ctx context.Context, st vmm.State, f *os.File) error {
	if st.ControlSocket == "" {
		return errors.New("no api socket in state")
	}
	if st.SaveMemory == "" {
		return errors.New("the vm was not started to be saved: no memory file (Spec.MemoryFile) to save its RAM to")
	}
	mem, err := os.OpenFile(st.SaveMemory, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open the memory file: %w", err)
	}
	defer mem.Close()
	fi, err := mem.Stat()
	if err != nil {
		return err
	}
	// Firecracker's folder, on the host and as it names it.
	host, own := filepath.Dir(st.ControlSocket), jailPath
	if st.Chroot != "" {
		host, own = st.Chroot, ""
	}
	statePath, memPath := filepath.Join(host, SnapshotStateName), filepath.Join(host, SnapshotMemoryName)
	defer vmm.RemoveFiles(statePath, memPath)
	if err := vmm.RemoveFiles(statePath, memPath); err != nil {
		return err
	}
	client := NewClient(st.ControlSocket, apiTimeout)
	if err := client.Patch(ctx, "/vm", VMState(fcapi.VMPaused)); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if err := NewClient(st.ControlSocket, snapshotTimeout).Put(ctx, "/snapshot/create", SnapshotCreate(own)); err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	sf, err := openMade(statePath, -1)
	if err != nil {
		return err
	}
	defer sf.Close()
	if _, err := io.Copy(f, sf); err != nil {
		return fmt.Errorf("copy the snapshot's state: %w", err)
	}
	mf, err := openMade(memPath, fi.Size())
	if err != nil {
		return err
	}
	defer mf.Close()
	if err := image.SparseCopy(ctx, mem, mf, fi.Size()); err != nil {
		return fmt.Errorf("copy the snapshot's memory: %w", err)
	}
	d.log.Info("firecracker snapshot saved", "pid", st.PID, "memory_bytes", fi.Size())
	return nil
}

// snapshotTimeout bounds PUT /snapshot/create, which writes all of the
// guest's memory.
const snapshotTimeout = 60 * time.Second

// openMade opens a file Firecracker (or its jailer) made in its folder or
// jail, where the VMM's user could have put anything: without following
// a link, without blocking on a FIFO, and only a regular file (of size
// bytes unless size is negative).
func openMade(p string, size int64) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s, which firecracker's side made: %w", p, err)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", p)
	case size >= 0 && fi.Size() != size:
		err = fmt.Errorf("%s is %d bytes long, want %d (the guest's memory)", p, fi.Size(), size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
