package firecracker

import (
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// Warm templates under Firecracker (not wired to vmm.Snapshotter yet):
// the template is paused (PATCH /vm Paused) and saved as a full snapshot,
// its device state and its guest memory in two files; a clone is a
// Firecracker that has not booted, given the snapshot with PUT
// /snapshot/load: the memory file mapped privately, its own TAP device and
// vsock socket in place of the template's, kvmclock advanced by the time
// since the snapshot, and the VM resumed.

// Snapshot file names in a template folder.
const (
	SnapshotStateName  = "snapshot.state"
	SnapshotMemoryName = "snapshot.mem"
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
// (as Firecracker sees it: see View) of the snapshot in dir: the memory
// file as a private file backend, spec.TAP for the interface, the vsock
// socket in spec.Dir, the clock advanced to real time, and the VM resumed.
func SnapshotLoad(spec vmm.Spec, dir string) fcapi.SnapshotLoadParams {
	p := fcapi.SnapshotLoadParams{
		SnapshotPath:  dir + "/" + SnapshotStateName,
		MemBackend:    &fcapi.MemoryBackend{BackendType: fcapi.MemBackendFile, BackendPath: dir + "/" + SnapshotMemoryName},
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
