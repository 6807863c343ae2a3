// Package fcapi holds the request and response bodies of the Firecracker
// v1.16.1 HTTP API that banger uses, as Go types whose JSON field names are
// exactly those of the definitions in Firecracker's swagger specification
// (src/firecracker/swagger/firecracker.yaml at tag v1.16.1).
//
// Each type carries a subset of its definition's properties and nothing
// else: Firecracker rejects unknown fields. A property the specification
// marks required is never omitempty; an optional one always is, so an unset
// Go field is left out rather than sent as a zero value or null. Optional
// booleans are *bool so that false can still be sent on purpose. The
// package's tests check every struct tag against the specification.
package fcapi

// Version is the Firecracker release these types follow.
const Version = "1.16.1"

// MachineConfiguration is the body of PUT /machine-config (definition
// MachineConfiguration).
type MachineConfiguration struct {
	VcpuCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	Smt             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"` // "None" or "2M"
}

// BootSource is the body of PUT /boot-source (definition BootSource).
// BootArgs replaces Firecracker's default kernel command line; Firecracker
// appends root= and device entries to it.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id} (definition Drive), for a
// virtio-block drive backed by a host file. DriveID must equal the path's
// drive_id and contain only letters, digits and '_'.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PartUUID     string `json:"partuuid,omitempty"`
	IsRootDevice bool   `json:"is_root_device"`
	CacheType    string `json:"cache_type,omitempty"` // "Unsafe" (default) or "Writeback"
	IsReadOnly   *bool  `json:"is_read_only,omitempty"`
	PathOnHost   string `json:"path_on_host,omitempty"`
	IOEngine     string `json:"io_engine,omitempty"` // "Sync" (default) or "Async"
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}
// (definition NetworkInterface). IfaceID must equal the path's iface_id and
// contain only letters, digits and '_'.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
}

// Vsock is the body of PUT /vsock (definition Vsock). The deprecated
// vsock_id property is deliberately absent.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// SerialDevice is the body of PUT /serial (definition SerialDevice).
type SerialDevice struct {
	SerialOutPath string `json:"serial_out_path,omitempty"`
}

// Logger is the body of PUT /logger (definition Logger).
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace or Off
	ShowLevel     *bool  `json:"show_level,omitempty"`
	ShowLogOrigin *bool  `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Action types of InstanceActionInfo.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions (definition
// InstanceActionInfo).
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// States of the Vm definition (PATCH /vm).
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// VM is the body of PATCH /vm (definition Vm).
type VM struct {
	State string `json:"state"`
}

// Instance states reported by GET / (InstanceInfo.State).
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// AppName is InstanceInfo.AppName of a real Firecracker.
const AppName = "Firecracker"

// InstanceInfo is the response of GET / (definition InstanceInfo).
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// FirecrackerVersion is the response of GET /version (definition
// FirecrackerVersion).
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// FullVMConfiguration is the response of GET /vm/config (definition
// FullVmConfiguration), the parts banger uses. A microVM restored from a
// snapshot has no boot source.
type FullVMConfiguration struct {
	BootSource        *BootSource          `json:"boot-source,omitempty"`
	Drives            []Drive              `json:"drives"`
	MachineConfig     MachineConfiguration `json:"machine-config"`
	NetworkInterfaces []NetworkInterface   `json:"network-interfaces"`
	Vsock             *Vsock               `json:"vsock,omitempty"`
}

// Error is the body of every error response (definition Error).
type Error struct {
	FaultMessage string `json:"fault_message,omitempty"`
}
