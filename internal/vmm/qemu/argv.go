package qemu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/vmm"
)

// File names inside Spec.Dir owned by this driver.
const (
	// QMPSocketName is the QMP control socket, <Dir>/qmp.sock.
	QMPSocketName = "qmp.sock"
	// AgentSocketName is the host side of the guest agent's
	// virtio-serial port, <Dir>/agent.sock.
	AgentSocketName = "agent.sock"
	// PIDFileName is the pid file QEMU wrote while banger started it with
	// -daemonize; Stop still removes one left by such a VM.
	PIDFileName = "qemu.pid"
	// OutFileName receives QEMU's stdout and stderr, <Dir>/qemu.out.
	OutFileName = "qemu.out"
)

// machine is the -M value. microvm has no PCI bus and no firmware: the
// kernel is loaded directly (PVH entry of the uncompressed vmlinux).
// acpi=on makes QEMU describe the virtio-mmio devices in the ACPI DSDT, which
// is how a stock distribution kernel (virtio_mmio as a module) finds them;
// with acpi=off QEMU instead appends virtio_mmio.device= to the kernel
// command line. ACPI is also what delivers system_powerdown to the guest (as
// a power button press through the generic event device). rtc=on gives the
// guest a wall clock; x-option-roms=off skips loading option ROMs nobody
// uses.
const machine = "microvm,x-option-roms=off,rtc=on,acpi=on"

// sandbox is the -sandbox value: QEMU's seccomp filter, installed before
// the guest runs, which also sets no_new_privs. obsolete=deny refuses
// obsolete system calls, elevateprivileges=deny any set*id call (QEMU
// already runs as its final user: banger starts it so, rather than with
// -runas, which changes ids after the filter is in place and fails),
// spawn=deny fork and exec (so no -daemonize: Start runs QEMU as its own
// child in a new session), resourcecontrol=deny scheduler and affinity
// changes.
const sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// The -add-fd sets: /dev/fdset/N names a set of descriptors of which QEMU
// picks the one whose access mode it asks for.
const (
	consoleFDSet = 1
	diskFDSet    = 2
	backingFDSet = 3
)

// QMPSocket returns the QMP socket path for a VM folder.
func QMPSocket(dir string) string { return filepath.Join(dir, QMPSocketName) }

// AgentSocket returns the agent socket path for a VM folder.
func AgentSocket(dir string) string { return filepath.Join(dir, AgentSocketName) }

// PIDFile returns the legacy pid file path for a VM folder.
func PIDFile(dir string) string { return filepath.Join(dir, PIDFileName) }

// OutFile returns the path of QEMU's output file for a VM folder.
func OutFile(dir string) string { return filepath.Join(dir, OutFileName) }

// How Start opens a File for QEMU.
const (
	HowRead      = "read"       // O_RDONLY
	HowReadWrite = "read-write" // O_RDWR
	HowAppend    = "append"     // O_WRONLY|O_APPEND, created with mode 0600
	HowListen    = "listen"     // a Unix socket bound and listening at Path, mode 0600
	HowTAP       = "tap"        // the existing TAP device named Path, attached
	HowConnect   = "connect"    // a Unix socket connected to the one listening at Path
)

// File is one file Start opens and QEMU inherits as descriptor FD: QEMU
// opens nothing by path, so it needs no access to the VM folder, the
// runtime bundle, /dev/net/tun or the sockets' folder.
type File struct {
	FD   int
	Path string
	How  string
}

// String reads "fd 3: append /path/console.log".
func (f File) String() string { return fmt.Sprintf("fd %d: %s %s", f.FD, f.How, f.Path) }

// fdPlan hands out descriptor numbers in the order files are added;
// ExtraFiles of a child process start at 3.
type fdPlan struct{ files []File }

func (p *fdPlan) pass(how, path string) int {
	f := File{FD: 3 + len(p.files), Path: path, How: how}
	p.files = append(p.files, f)
	return f.FD
}

// Argv returns the complete command line (bin first) that launches spec as
// a QEMU microvm under its seccomp sandbox, and the files Start must open
// and pass to it, in descriptor order. It is a pure function of its
// arguments: it neither validates spec nor touches the file system. The
// initrd, root disk, network and agent parts are left out when their Spec
// fields are empty. spec.KernelArgs is passed through unchanged;
// Driver.Start adds a TSC hint to it under TCG before calling Argv.
func Argv(bin string, spec vmm.Spec) ([]string, []File) {
	var p fdPlan
	a := []string{bin, "-name", "banger-" + spec.ID}
	a = append(a, bootArgs(&p, spec)...)
	if spec.Disk != "" {
		// Raw, read-write. cache=writeback (QEMU's default) goes through the
		// host page cache and passes guest flushes on as fdatasync, so it is
		// crash-safe for a guest file system; unlike cache=none it does not
		// need O_DIRECT, which tmpfs and some overlay setups refuse.
		// aio=threads works everywhere; discard=unmap lets guest TRIM punch
		// holes so sparse disks stay sparse. QEMU's image locking (on by
		// default) stops a second VMM from opening the same disk. QEMU opens
		// the image read-only and read-write, so the set holds both.
		rw, ro := p.pass(HowReadWrite, spec.Disk), p.pass(HowRead, spec.Disk)
		a = append(a,
			"-add-fd", fmt.Sprintf("fd=%d,set=%d", rw, diskFDSet),
			"-add-fd", fmt.Sprintf("fd=%d,set=%d", ro, diskFDSet))
		if spec.DiskBacking == "" {
			a = append(a, "-drive", fmt.Sprintf("id=root,file=/dev/fdset/%d,format=raw,if=none,cache=writeback,aio=threads,discard=unmap", diskFDSet))
		} else {
			a = append(a, overlayArgs(&p, spec)...)
		}
		a = append(a, "-device", "virtio-blk-device,drive=root")
	}
	if spec.TAP != "" || spec.DetachedNIC {
		dev := "virtio-net-device,netdev=n0"
		if spec.MAC != "" {
			dev += ",mac=" + spec.MAC
		}
		// A detached NIC is a port of a hub nothing else is attached to.
		netdev := "hubport,id=n0,hubid=0"
		if spec.TAP != "" {
			netdev = fmt.Sprintf("tap,id=n0,fd=%d", p.pass(HowTAP, spec.TAP))
		}
		a = append(a, "-netdev", netdev, "-device", dev)
	}
	if spec.Agent {
		a = append(a,
			"-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", p.pass(HowListen, AgentSocket(spec.Dir))),
			"-device", "virtserialport,chardev=agent,name="+agent.SerialPortName)
	}
	a = append(a, shareArgs(&p, spec)...)
	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", p.pass(HowListen, QMPSocket(spec.Dir))),
		"-mon", "chardev=qmp,mode=control")
	if spec.IncomingState != "" {
		// Start loads the state (migrate-incoming fd:N) once QMP answers.
		p.pass(HowRead, spec.IncomingState)
		a = append(a, "-incoming", "defer")
	}
	return a, p.files
}

// overlayArgs makes the block node "root" a qcow2 overlay (spec.Disk,
// the set diskFDSet) on top of the raw spec.DiskBacking, which QEMU gets
// as a read-only descriptor only (its own set) and opens read-only: the
// backing file named in the overlay's header is never opened (QEMU is
// told the backing node instead), and a VMM cannot write the backing
// whatever the guest does. Read-only nodes take only shared locks, so
// any number of clones open one backing file. The rest is as the raw
// disk's -drive (writeback cache, thread pool, guest TRIM passed on).
func overlayArgs(p *fdPlan, spec vmm.Spec) []string {
	ro := p.pass(HowRead, spec.DiskBacking)
	return []string{
		"-add-fd", fmt.Sprintf("fd=%d,set=%d", ro, backingFDSet),
		"-blockdev", fmt.Sprintf("driver=file,node-name=backing-file,filename=/dev/fdset/%d,read-only=on,aio=threads", backingFDSet),
		"-blockdev", "driver=raw,node-name=backing,file=backing-file,read-only=on",
		"-blockdev", fmt.Sprintf("driver=file,node-name=root-file,filename=/dev/fdset/%d,aio=threads,discard=unmap", diskFDSet),
		"-blockdev", "driver=qcow2,node-name=root,file=root-file,backing=backing,discard=unmap",
	}
}

// memoryArgs backs guest RAM with spec.MemoryFile: QEMU 7.2's file
// backend opens its mem-path itself (O_RDWR, even when it maps it
// privately), so the path is the /proc/self/fd link of an inherited
// descriptor, which reopens the same file.
func memoryArgs(p *fdPlan, spec vmm.Spec) []string {
	if spec.MemoryFile == "" {
		return nil
	}
	share := "off"
	if spec.MemoryShared {
		share = "on"
	}
	return []string{
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=%s",
			spec.MemoryMiB, procFD(p.pass(HowRead, spec.MemoryFile)), share),
		"-M", "memory-backend=mem"}
}

// bootArgs is the part of the command line shared by VMs and the
// acceleration probe: machine, accelerator, CPU model, size, the sandbox,
// a serial console appended to spec.ConsoleLog, and the kernel, initrd and
// kernel command line.
func bootArgs(p *fdPlan, spec vmm.Spec) []string {
	a := []string{"-M", machine, "-accel", spec.Accel}
	// "host" passes the host CPU through under KVM. TCG cannot emulate the
	// host model; "max" enables every feature TCG implements (the default
	// qemu64 lacks e.g. SSE4.2/POPCNT that distribution userlands probe).
	switch spec.Accel {
	case "kvm":
		a = append(a, "-cpu", "host")
	case "tcg":
		a = append(a, "-cpu", "max")
	}
	a = append(a,
		"-m", strconv.Itoa(spec.MemoryMiB)+"M",
		"-smp", strconv.Itoa(spec.CPUs),
		// With -nodefaults, -nographic creates no stdio devices: QEMU's
		// stdout and stderr carry only its own messages.
		"-nographic", "-nodefaults", "-no-reboot",
		"-sandbox", sandbox,
		"-add-fd", fmt.Sprintf("fd=%d,set=%d", p.pass(HowAppend, spec.ConsoleLog), consoleFDSet),
		"-chardev", fmt.Sprintf("file,id=con0,path=/dev/fdset/%d,append=on", consoleFDSet),
		"-serial", "chardev:con0",
		// The kernel loaders open a path, not a descriptor set; a
		// /proc/self/fd link reaches the inherited descriptor whatever
		// folders lie above the file.
		"-kernel", procFD(p.pass(HowRead, spec.Kernel)))
	if spec.Initrd != "" {
		a = append(a, "-initrd", procFD(p.pass(HowRead, spec.Initrd)))
	}
	a = append(a, memoryArgs(p, spec)...)
	return append(a, "-append", spec.KernelArgs)
}

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// filesNote says which descriptor is which file, for State.Notes.
func filesNote(files []File) string {
	var parts []string
	for _, f := range files {
		parts = append(parts, fmt.Sprintf("%d=%s (%s)", f.FD, f.Path, f.How))
	}
	return "descriptors: " + strings.Join(parts, ", ")
}
