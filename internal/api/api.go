// Package api defines the JSON-RPC 2.0 protocol between the banger CLI and
// bangerd: method names, request and response types, and error codes. Both
// sides import it, so it has no dependencies beyond the standard library.
//
// Framing: the client opens a connection to the daemon's Unix socket, writes
// one request as a JSON object followed by a newline, and reads one response.
// Closing the connection early cancels the request.
//
// Streaming methods (vm.exec, vm.copy_in, vm.copy_out) answer the same way,
// and then the connection carries the method's own bytes in both directions,
// as an HTTP upgrade does: the client sends nothing after its request until
// the response has come. Each method says what its bytes are; closing the
// connection ends the stream.
package api

import (
	"encoding/json"
	"time"
)

// Method names. The daemon's method table is keyed by these.
const (
	MethodDaemonStatus = "daemon.status"
	// MethodDaemonInfo answers only who is answering (DaemonInfo): the
	// CLI's cheap check, before each command, that the daemon is its build.
	MethodDaemonInfo = "daemon.info"
	MethodDaemonStop = "daemon.stop"
	MethodVMCreate   = "vm.create"
	MethodVMList     = "vm.list"
	MethodVMGet      = "vm.get"
	MethodVMStart    = "vm.start"
	MethodVMStop     = "vm.stop"
	MethodVMRestart  = "vm.restart"
	MethodVMPause    = "vm.pause"
	MethodVMResume   = "vm.resume"
	MethodVMDelete   = "vm.delete"
	MethodVMSSHInfo  = "vm.ssh_info"
	MethodVMPing     = "vm.ping"
	MethodVMExec     = "vm.exec"
	MethodVMCopyIn   = "vm.copy_in"
	MethodVMCopyOut  = "vm.copy_out"
	// MethodVMMount adds or removes a shared folder of a stopped VM
	// (VMMountParams).
	MethodVMMount = "vm.mount"
	// MethodVMForward adds or removes a port forward (VMForwardParams).
	MethodVMForward = "vm.forward"
	// MethodSSHConfig is `banger ssh-config`: SSHConfig.
	MethodSSHConfig   = "ssh.config"
	MethodImageBuild  = "image.build"
	MethodImageList   = "image.list"
	MethodImageGet    = "image.get"
	MethodImageDelete = "image.delete"
	MethodImageImport = "image.import"
	MethodImageWarm   = "image.warm"
	// MethodImageCheckAgent is `banger doctor`'s image-agent check, run by
	// the daemon, which alone reads its database and image files.
	MethodImageCheckAgent = "image.check_agent"
)

// Version is the JSON-RPC version string.
const Version = "2.0"

// Request is a JSON-RPC 2.0 request.
type Request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Response is a JSON-RPC 2.0 response. Daemon is an extension member that
// identifies the daemon's build on every response, so a client can spot a
// stale daemon.
//
// The daemon writes the members in this order, the result (large for a
// list) last, so a client can take it without scanning it twice.
type Response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Daemon  DaemonInfo      `json:"daemon"`
	Error   *Error          `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// DaemonInfo identifies a running daemon's build.
type DaemonInfo struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	// Executable is the daemon binary's path and ExecutableID its size and
	// modification time when the daemon started: a rebuilt binary differs.
	Executable   string `json:"executable"`
	ExecutableID string `json:"executable_id"`
}

// JSON-RPC 2.0 error codes, and banger's own in the server-error range.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603

	CodeNotFound           = -32001
	CodeExists             = -32002
	CodeFailedPrecondition = -32003
	CodeUnavailable        = -32004
	CodePermissionDenied   = -32005
)

// Error is a JSON-RPC error object. Message is written for the user: it says
// what failed and what to do.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// VM states as derived by the daemon.
const (
	StateCreating = "creating"
	StateStarting = "starting"
	StateRunning  = "running"
	StatePaused   = "paused" // running, its guest frozen (vm pause)
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateBroken   = "broken"
	StateUnknown  = "unknown"
)

// VM is a virtual machine as shown to users. State is derived from observed
// facts, never stored.
type VM struct {
	// BootedFrom says how vm.create started the VM: "template KEY" (a
	// clone of a warm template) or "cold boot"; other calls leave it empty.
	BootedFrom   string `json:"booted_from,omitempty"`
	ID           string `json:"id"`
	Name         string `json:"name"`
	State        string `json:"state"`
	DesiredState string `json:"desired_state"`
	IP           string `json:"ip"`
	MAC          string `json:"mac"`
	CPUs         int    `json:"cpus"`
	MemoryMiB    int    `json:"memory_mib"`
	DiskBytes    int64  `json:"disk_bytes"`
	Image        string `json:"image"`
	VMM          string `json:"vmm"`
	Accel        string `json:"accel,omitempty"`
	Kernel       string `json:"kernel"`
	KernelArgs   string `json:"kernel_args"`
	PID          int    `json:"pid,omitempty"`
	// VMMUser is the uid and gid the VMM runs as ("uid N gid N").
	VMMUser     string     `json:"vmm_user,omitempty"`
	TAP         string     `json:"tap,omitempty"`
	Dir         string     `json:"dir"`
	ConsoleLog  string     `json:"console_log"`
	Argv        []string   `json:"argv,omitempty"`
	VsockCID    uint32     `json:"vsock_cid,omitempty"`
	AgentSocket string     `json:"agent_socket,omitempty"`
	Notes       []string   `json:"notes,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	// ClockOffsetMillis is how far the guest's wall clock was ahead of the
	// host's (negative: behind) when the daemon last measured it, at
	// ClockMeasuredAt (it measures every 10 s while the VM runs, and
	// corrects what is off). Absent when not running or not measured.
	ClockOffsetMillis *float64   `json:"clock_offset_ms,omitempty"`
	ClockMeasuredAt   *time.Time `json:"clock_measured_at,omitempty"`
	// Forwards are the VM's port forwards (vm.get, vm.list, vm.forward
	// fill them).
	Forwards []Forward `json:"forwards,omitempty"`
	// Mounts are the VM's shared folders (vm.get, vm.mount fill them).
	Mounts []Mount `json:"mounts,omitempty"`
}

// Mount is one shared folder of a VM: a host folder the guest mounts
// through virtio-fs.
type Mount struct {
	// Spec is HOST_DIR:GUEST_DIR[:ro].
	Spec     string `json:"spec"`
	HostDir  string `json:"host_dir"`
	GuestDir string `json:"guest_dir"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// VMMountParams are the parameters of vm.mount: add the shared folder
// Spec (HOST_DIR[:GUEST_DIR][:ro], HOST_DIR absolute) to the stopped VM
// Name, or with Remove remove the one at Spec's guest folder (Spec may be
// just GUEST_DIR then). The result is the VM.
type VMMountParams struct {
	Name   string `json:"name"`
	Spec   string `json:"spec"`
	Remove bool   `json:"remove,omitempty"`
}

// Forward is one port forward of a VM: a host address and port to a port
// of the guest's 127.0.0.1, through the guest agent.
type Forward struct {
	// Spec is HOST_ADDR:HOST_PORT:GUEST_PORT/PROTO.
	Spec string `json:"spec"`
	// Active is true while the host side listens (the VM runs).
	Active bool `json:"active"`
	// Error says why a forward of a running VM does not listen (its host
	// port was taken when the VM started).
	Error string `json:"error,omitempty"`
}

// VMForwardParams are the parameters of vm.forward: add Spec
// ([HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]) to VM Name, or remove it
// with Remove. The result is the VM.
type VMForwardParams struct {
	Name   string `json:"name"`
	Spec   string `json:"spec"`
	Remove bool   `json:"remove,omitempty"`
}

// VMCreateParams are the parameters of vm.create. Zero values take defaults.
type VMCreateParams struct {
	Name      string `json:"name"`
	Image     string `json:"image"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	DiskBytes int64  `json:"disk_bytes"`
	NoStart   bool   `json:"no_start"`
	VMM       string `json:"vmm"`
	// Publish are port forwards to make with the VM (see VMForwardParams).
	Publish []string `json:"publish,omitempty"`
	// Mounts are shared folders (see VMMountParams; HOST_DIR absolute).
	Mounts []string `json:"mounts,omitempty"`
	// Cold boots the VM from its kernel even when a warm template of its
	// image and shape exists.
	Cold bool `json:"cold,omitempty"`
}

// ImageWarmParams are the parameters of image.warm: the image and the
// machine shape of the template (0: the defaults vm create uses).
type ImageWarmParams struct {
	Image     string `json:"image"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	DiskBytes int64  `json:"disk_bytes"`
	VMM       string `json:"vmm"`
}

// Template is a warm template: a booted guest of an image saved for
// clones (see image warm).
type Template struct {
	Key       string    `json:"key"`
	Image     string    `json:"image"`
	ImageID   string    `json:"image_id"`
	VMM       string    `json:"vmm"`
	Accel     string    `json:"accel"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	DiskBytes int64     `json:"disk_bytes"`
	Dir       string    `json:"dir"`
	CreatedAt time.Time `json:"created_at"`
	// BuildSeconds is how long booting and saving it took.
	BuildSeconds float64 `json:"build_seconds"`
	// SizeBytes is the disk space its files take (RAM, state, disk).
	SizeBytes int64 `json:"size_bytes"`
	// Reused is set by image.warm when the template existed already.
	Reused bool `json:"reused,omitempty"`
}

// VMRef names one VM by name or id.
type VMRef struct {
	Name string `json:"name"`
}

// VMStopParams are the parameters of vm.stop and vm.delete.
type VMStopParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force"`
}

// VMPingParams are the parameters of vm.ping.
type VMPingParams struct {
	Name string `json:"name"`
	// TimeoutMS bounds the wait for the guest agent; 0 means 2000.
	TimeoutMS int `json:"timeout_ms,omitempty"`
}

// PingResult is the result of vm.ping. A VM that is not running answers at
// once with Alive false and its State.
type PingResult struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Alive is true when the guest agent answered.
	Alive bool `json:"alive"`
	// RTTMillis is the round trip of the answered ping.
	RTTMillis     float64    `json:"rtt_ms,omitempty"`
	Hostname      string     `json:"hostname,omitempty"`
	UptimeSeconds float64    `json:"uptime_seconds,omitempty"`
	BootID        string     `json:"boot_id,omitempty"`
	AgentVersion  string     `json:"agent_version,omitempty"`
	Channel       string     `json:"channel,omitempty"` // "virtio-serial" or "vsock"
	StartedAt     *time.Time `json:"started_at,omitempty"`
	// ClockOffsetMillis is how far the guest's wall clock is ahead of the
	// host's (negative: behind), measured by this ping against the middle
	// of its round trip. Absent when the agent cannot tell (an old agent).
	ClockOffsetMillis *float64 `json:"clock_offset_ms,omitempty"`
	// Note is set when the guest answered but lacks something, for
	// example an agent too old for exec and cp.
	Note string `json:"note,omitempty"`
	// Error says why the agent did not answer.
	Error string `json:"error,omitempty"`
}

// VMExecParams are the parameters of vm.exec. After the response, the
// connection carries guestexec frames between the CLI and the guest agent,
// unchanged by the daemon (see package guestexec).
type VMExecParams struct {
	Name string          `json:"name"`
	Exec json.RawMessage `json:"exec"` // guestexec.Params
}

// VMExecResult is the result of vm.exec.
type VMExecResult struct {
	// PID is the command's process id in the guest (0 when it could not
	// start; its frames say why).
	PID int `json:"pid"`
}

// VMCopyOutParams are the parameters of vm.copy_out (guest to host).
// After the response, the connection carries a tar stream (package
// guestcp) from the guest agent.
type VMCopyOutParams struct {
	Name string `json:"name"`
	// Path is an absolute path in the guest; a directory needs Recursive.
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// VMCopyOutResult is the result of vm.copy_out.
type VMCopyOutResult struct {
	// Dir is true when Path is a directory; Bytes is what its regular
	// files hold.
	Dir   bool  `json:"dir"`
	Bytes int64 `json:"bytes"`
}

// VMCopyInParams are the parameters of vm.copy_in (host to guest). After
// the response the client sends a tar stream (package guestcp) and ends
// its direction; the guest agent then answers with one JSON line
// (guestcp.InResult).
type VMCopyInParams struct {
	Name string `json:"name"`
	// Dest is an absolute path in the guest: the copy goes into it when it
	// is a directory, else to it.
	Dest string `json:"dest"`
	// Source is the base name of the source, Dir whether it is a
	// directory.
	Source string `json:"source"`
	Dir    bool   `json:"dir,omitempty"`
}

// VMList is the result of vm.list.
type VMList struct {
	VMs []VM `json:"vms"`
}

// SSHInfo tells the CLI how to reach a VM with OpenSSH.
type SSHInfo struct {
	User           string `json:"user"`
	Host           string `json:"host"`
	Port           int    `json:"port"`
	IdentityFile   string `json:"identity_file"`
	KnownHostsFile string `json:"known_hosts_file"`
	HostKeyAlias   string `json:"host_key_alias"`
}

// SSHConfig is the result of ssh.config: an OpenSSH client configuration
// with a Host block per VM (NAME.banger.internal) and the file the daemon
// keeps it in, current after every vm create and rm.
type SSHConfig struct {
	Text string `json:"text"`
	Path string `json:"path"`
}

// Image is a bootable root filesystem image.
type Image struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Source        string    `json:"source"`
	Path          string    `json:"path"`
	SizeBytes     int64     `json:"size_bytes"`
	KernelRelease string    `json:"kernel_release"`
	CreatedAt     time.Time `json:"created_at"`
	UsedBy        []string  `json:"used_by,omitempty"`
	// Digest is the source's content digest ("sha256:…"): the OCI manifest
	// digest, or the SHA-256 of an imported file. Empty for Debian builds.
	Digest string `json:"digest,omitempty"`
	// AllocatedBytes is the disk space the (sparse) image file takes.
	AllocatedBytes int64 `json:"allocated_bytes"`
	// BuildSeconds is how long the build took; Cached says it reused the
	// build cache.
	BuildSeconds float64 `json:"build_seconds"`
	Cached       bool    `json:"cached"`
	CacheKey     string  `json:"cache_key,omitempty"`
	// Templates are the image's warm templates (image.get only).
	Templates []Template `json:"templates,omitempty"`
	// Warnings are problems found while importing the image that do not
	// stop it (no SSH server, no guest agent). Only image.import sets them;
	// they are not stored.
	Warnings []string `json:"warnings,omitempty"`
}

// ImageBuildParams are the parameters of image.build.
type ImageBuildParams struct {
	Name string `json:"name"`
	// From is debian:RELEASE, oci:REF, oci-layout:DIR[:TAG|@DIGEST] or
	// docker-archive:FILE.
	From string `json:"from"`
	// NoCache builds even when the build cache holds a result for the same
	// inputs (the new result replaces it).
	NoCache bool `json:"no_cache,omitempty"`
}

// ImageImportParams are the parameters of image.import: File (an absolute
// path the daemon can read) is an ext4 image or a root file system tarball
// (optionally gzip-, xz- or zstd-compressed).
type ImageImportParams struct {
	Name string `json:"name"`
	File string `json:"file"`
}

// ImageDeleteParams are the parameters of image.delete. Force removes an
// image that VMs still name: their disks are copies and do not depend on
// the image file.
type ImageDeleteParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// ImageList is the result of image.list.
type ImageList struct {
	Images []Image `json:"images"`
}

// CheckResult is one host check's finding as `banger doctor` prints it
// (doctor.Result across the socket), the result of image.check_agent.
type CheckResult struct {
	// Status is "ok", "warn", "fail" or "skip".
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// DaemonStatus is the result of daemon.status.
type DaemonStatus struct {
	DaemonInfo
	StartedAt  time.Time `json:"started_at"`
	Socket     string    `json:"socket"`
	StateDir   string    `json:"state_dir"`
	RuntimeDir string    `json:"runtime_dir"`
	Bridge     string    `json:"bridge"`
	Subnet     string    `json:"subnet"`
	VMs        int       `json:"vms"`
	Running    int       `json:"running"`
	// DNS is the address of the DNS server for NAME.banger.internal
	// ("172.30.0.1:53"), empty while it does not run: before the bridge
	// exists, or when it could not start (DNSError says why).
	DNS      string `json:"dns,omitempty"`
	DNSError string `json:"dns_error,omitempty"`
	// DNSResolved is what registering the server with systemd-resolved
	// (for the host's own lookups) said.
	DNSResolved string `json:"dns_resolved,omitempty"`
}
