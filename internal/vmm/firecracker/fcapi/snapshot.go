package fcapi

// Snapshot types (warm templates under Firecracker).
const (
	SnapshotFull   = "Full"
	MemBackendFile = "File"
)

// SnapshotCreateParams is the body of PUT /snapshot/create (definition
// SnapshotCreateParams): a full snapshot of a paused VM, its device state
// to SnapshotPath and its guest memory to MemFilePath.
type SnapshotCreateParams struct {
	MemFilePath  string `json:"mem_file_path"`
	SnapshotPath string `json:"snapshot_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// MemoryBackend is where a snapshot load takes guest memory from
// (definition MemoryBackend): a file mapped privately.
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// NetworkOverride gives a restored network interface another TAP device
// (definition NetworkOverride).
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride gives a restored vsock device another Unix socket
// (definition VsockOverride).
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load (definition
// SnapshotLoadParams), sent to a Firecracker that has not booted:
// the clone's own TAP device and vsock socket replace the template's, and
// ClockRealtime advances kvmclock by the time since the snapshot.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	ResumeVM         *bool             `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
	ClockRealtime    *bool             `json:"clock_realtime,omitempty"`
}
