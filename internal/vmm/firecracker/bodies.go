package firecracker

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// Files of this driver. Firecracker opens and creates files by path, and
// runs as the Spec's RunAs user, who may not even reach the VM folder: so
// everything Firecracker creates lives in a folder of its own that this
// user owns, <Dir>/firecracker (the jail), which it reaches through an
// inherited descriptor, and the files it only opens (kernel, initrd, disk)
// are inherited descriptors it reopens through /proc/self/fd (see Argv).
// Firecracker's jailer would chroot into the same folder.
const (
	// JailName is the folder Firecracker creates its files in,
	// <Dir>/firecracker, owned by the user it runs as, mode 0700.
	JailName = "firecracker"
	// APISocketName is Firecracker's API socket, in the jail.
	APISocketName = "api.sock"
	// VsockSocketName is the hybrid vsock socket of the guest agent's
	// vsock device, in the jail.
	VsockSocketName = "vsock.sock"
	// LogFileName is Firecracker's own log (PUT /logger), in the jail.
	// Start keeps the previous one as firecracker.log.1, because
	// Firecracker writes its log from the start of an existing file without
	// truncating it.
	LogFileName = "firecracker.log"
	// OutFileName receives Firecracker's stderr (panics, messages from
	// before the API is up), appended, <Dir>/firecracker.out. The daemon
	// opens it: it is not in the jail.
	OutFileName = "firecracker.out"
)

// jailFD is the descriptor of the jail in Firecracker, and jailPath the
// jail as Firecracker names it.
const (
	jailFD   = 3
	jailPath = "/proc/self/fd/3"
)

// Resource ids used in API paths. Firecracker allows only letters, digits
// and '_' in them.
const (
	// RootDriveID is the drive_id of the root disk.
	RootDriveID = "rootfs"
	// IfaceID is the iface_id of the guest's network interface.
	IfaceID = "eth0"
)

// JailDir returns the jail folder for a VM folder.
func JailDir(dir string) string { return filepath.Join(dir, JailName) }

// APISocket returns the API socket path for a VM folder.
func APISocket(dir string) string { return filepath.Join(JailDir(dir), APISocketName) }

// VsockSocket returns the hybrid vsock socket path for a VM folder.
func VsockSocket(dir string) string { return filepath.Join(JailDir(dir), VsockSocketName) }

// ListenerSocket returns the socket a host listener for guest-initiated
// vsock connections to port binds for a VM folder: Firecracker connects to
// "<vsock socket>_<port>".
func ListenerSocket(dir string, port uint32) string {
	return VsockSocket(dir) + "_" + strconv.FormatUint(uint64(port), 10)
}

// LogFile returns Firecracker's log file path for a VM folder.
func LogFile(dir string) string { return filepath.Join(JailDir(dir), LogFileName) }

// OutFile returns the path that receives Firecracker's stderr.
func OutFile(dir string) string { return filepath.Join(dir, OutFileName) }

// File is one file Start opens and Firecracker inherits as descriptor FD.
type File struct {
	FD   int
	Path string
	// Dir is true for the jail (opened O_PATH|O_DIRECTORY); other files
	// are opened read-write when RW, else read-only.
	Dir, RW bool
}

// Argv returns the command line (bin first) that launches Firecracker for
// spec, with its API socket in the jail and spec.ID as the instance id, and
// the files Start opens and passes to it: the jail first (descriptor 3),
// then the kernel, the initrd and the disk as spec names them, and a
// clone's snapshot state and memory (Spec.IncomingState, MemoryFile). View(spec)
// is where Firecracker finds them. It is a pure function: it neither
// validates spec nor touches the file system.
func Argv(bin string, spec vmm.Spec) ([]string, []File) {
	files := []File{{FD: jailFD, Path: JailDir(spec.Dir), Dir: true}}
	add := func(p string, rw bool) {
		if p != "" {
			files = append(files, File{FD: 3 + len(files), Path: p, RW: rw})
		}
	}
	add(spec.Kernel, false)
	add(spec.Initrd, false)
	add(spec.Disk, true)
	if spec.IncomingState != "" {
		add(spec.IncomingState, false)
		add(spec.MemoryFile, false)
	}
	return []string{bin, "--api-sock", jailPath + "/" + APISocketName, "--id", spec.ID}, files
}

// View returns spec as Firecracker sees it when launched with Argv: its
// VM folder is the jail, and the kernel, initrd, disk (and a clone's
// snapshot state and memory) are the /proc/self/fd links of their
// inherited descriptors.
func View(spec vmm.Spec) vmm.Spec {
	v := spec
	v.Dir = jailPath
	fd := 4
	files := []*string{&v.Kernel, &v.Initrd, &v.Disk}
	if v.IncomingState != "" {
		files = append(files, &v.IncomingState, &v.MemoryFile)
	}
	for _, p := range files {
		if *p != "" {
			*p = "/proc/self/fd/" + strconv.Itoa(fd)
			fd++
		}
	}
	return v
}

// MachineConfig returns the body of PUT /machine-config: spec.CPUs vCPUs
// and spec.MemoryMiB of memory, Firecracker's defaults for the rest (no
// SMT, no dirty page tracking, no huge pages).
func MachineConfig(spec vmm.Spec) fcapi.MachineConfiguration {
	return fcapi.MachineConfiguration{VcpuCount: spec.CPUs, MemSizeMib: spec.MemoryMiB}
}

// BootSource returns the body of PUT /boot-source: spec.Kernel, spec.Initrd
// (left out when empty) and spec.KernelArgs as given.
//
// Firecracker replaces its default command line with boot_args and then
// appends "root=/dev/vda rw" for the root drive (see Drive) and, on x86,
// virtio_mmio.device= entries. banger's kernel arguments already say
// "root=/dev/vda rw", so the guest sees them twice. That is harmless and
// left alone on purpose: the kernel and initramfs-tools both take the last
// root= (and the last of ro/rw), and Firecracker's equals ours because the
// root disk is the only, and so the first, virtio-blk device. Rewriting the
// arguments would make the command line differ between the QEMU and
// Firecracker drivers for no gain. A root= that named something else would
// be overridden by Firecracker's; RootArgConflict detects that.
func BootSource(spec vmm.Spec) fcapi.BootSource {
	return fcapi.BootSource{KernelImagePath: spec.Kernel, BootArgs: spec.KernelArgs, InitrdPath: spec.Initrd}
}

// RootArgConflict returns the value of the last root= in args when it is
// not /dev/vda, which Firecracker's own root=/dev/vda (appended after args)
// would override; it returns "" when args have no root= or the same one.
func RootArgConflict(args string) string {
	root := ""
	for _, f := range strings.Fields(args) {
		if v, ok := strings.CutPrefix(f, "root="); ok {
			root = v
		}
	}
	if root == "/dev/vda" {
		return ""
	}
	return root
}

// Drive returns the body of PUT /drives/rootfs: spec.Disk as the read-write
// root device. is_root_device is true so that Firecracker attaches it first
// (it becomes /dev/vda) and adds root=/dev/vda rw to the command line.
func Drive(spec vmm.Spec) fcapi.Drive {
	return fcapi.Drive{
		DriveID:      RootDriveID,
		IsRootDevice: true,
		IsReadOnly:   ptr(false),
		PathOnHost:   spec.Disk,
	}
}

// NetworkInterface returns the body of PUT /network-interfaces/eth0: the
// host TAP device spec.TAP (which must exist) and the guest MAC spec.MAC.
func NetworkInterface(spec vmm.Spec) fcapi.NetworkInterface {
	return fcapi.NetworkInterface{IfaceID: IfaceID, HostDevName: spec.TAP, GuestMAC: spec.MAC}
}

// Vsock returns the body of PUT /vsock: guest CID spec.VsockCID and the
// hybrid vsock Unix socket VsockSocketName in spec.Dir, on which
// Firecracker listens for host-initiated connections (see DialVsock).
func Vsock(spec vmm.Spec) fcapi.Vsock {
	return fcapi.Vsock{GuestCID: spec.VsockCID, UDSPath: spec.Dir + "/" + VsockSocketName}
}

// Serial returns the body of PUT /serial that sends the serial console to
// spec.ConsoleLog.
//
// The driver does not send it. Firecracker v1.16.1 opens serial_out_path
// with create+write and neither O_APPEND nor O_TRUNC
// (utils::open_file_nonblock), so a second boot writes over the previous
// console output from offset 0 and leaves stale bytes behind it; the file
// does not grow until the new output is longer than the old. vmm.Spec
// promises that the console is appended, and banger's VM service relies on
// that (it remembers the file size before Start to show "this boot's"
// console tail and watches the size for boot progress). Without PUT
// /serial Firecracker writes the console to its stdout, which Start opens
// on spec.ConsoleLog with O_APPEND: true appending, at the cost of one
// "Running Firecracker v1.16.1" log line per boot that Firecracker prints
// to stdout before PUT /logger takes effect (a useful boot separator).
func Serial(spec vmm.Spec) fcapi.SerialDevice {
	return fcapi.SerialDevice{SerialOutPath: spec.ConsoleLog}
}

// Logger returns the body of PUT /logger: Firecracker's own log goes to
// LogFileName in spec.Dir at level Info, with levels shown.
func Logger(spec vmm.Spec) fcapi.Logger {
	return fcapi.Logger{LogPath: spec.Dir + "/" + LogFileName, Level: "Info", ShowLevel: ptr(true)}
}

// Action returns the body of PUT /actions for actionType, one of
// fcapi.ActionInstanceStart, fcapi.ActionSendCtrlAltDel and
// fcapi.ActionFlushMetrics.
func Action(actionType string) fcapi.InstanceActionInfo {
	return fcapi.InstanceActionInfo{ActionType: actionType}
}

// VMState is the body of PATCH /vm: state is fcapi.VMPaused or
// fcapi.VMResumed.
func VMState(state string) fcapi.VM {
	return fcapi.VM{State: state}
}

// Request is one API call: method, path and JSON body.
type Request struct {
	// What names the step in errors and logs, e.g. "boot source".
	What   string
	Method string
	Path   string
	Body   any
}

// ConfigRequests returns, in order, the calls Start makes to configure a
// fresh Firecracker for spec (as Firecracker sees it: see View) before
// InstanceStart: logger, machine config, boot source, root drive (when
// spec.Disk is set), network interface (when spec.TAP is set) and vsock
// (when spec.VsockCID is set). There is no PUT /serial; see Serial for why.
func ConfigRequests(spec vmm.Spec) []Request {
	reqs := []Request{
		{"logger", "PUT", "/logger", Logger(spec)},
		{"machine config", "PUT", "/machine-config", MachineConfig(spec)},
		{"boot source", "PUT", "/boot-source", BootSource(spec)},
	}
	if spec.Disk != "" {
		reqs = append(reqs, Request{"root drive", "PUT", "/drives/" + RootDriveID, Drive(spec)})
	}
	if spec.TAP != "" {
		reqs = append(reqs, Request{"network interface", "PUT", "/network-interfaces/" + IfaceID, NetworkInterface(spec)})
	}
	if spec.VsockCID != 0 {
		reqs = append(reqs, Request{"vsock", "PUT", "/vsock", Vsock(spec)})
	}
	return reqs
}

func ptr[T any](v T) *T { return &v }
