package qemu

import (
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
	// PIDFileName is the pid file QEMU writes, <Dir>/qemu.pid.
	PIDFileName = "qemu.pid"
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

// QMPSocket returns the QMP socket path for a VM folder.
func QMPSocket(dir string) string { return filepath.Join(dir, QMPSocketName) }

// PIDFile returns the pid file path for a VM folder.
func PIDFile(dir string) string { return filepath.Join(dir, PIDFileName) }

// Argv returns the complete command line (bin first) that launches spec as a
// daemonized QEMU microvm. It is a pure function of its arguments: it
// neither validates spec nor touches the file system. The initrd, root
// disk, network and agent parts are left out when their Spec fields are
// empty. Paths are escaped for QEMU's option syntax (a ',' in a path is
// written ",,"). spec.KernelArgs is passed through unchanged; Driver.Start
// adds a TSC hint to it under TCG before calling Argv.
func Argv(bin string, spec vmm.Spec) []string {
	a := []string{bin, "-name", "banger-" + spec.ID}
	a = append(a, machineArgs(spec.Accel, spec.MemoryMiB, spec.CPUs, spec.ConsoleLog)...)
	a = append(a, "-kernel", spec.Kernel)
	if spec.Initrd != "" {
		a = append(a, "-initrd", spec.Initrd)
	}
	a = append(a, "-append", spec.KernelArgs)
	if spec.Disk != "" {
		// Raw, read-write. cache=writeback (QEMU's default) goes through the
		// host page cache and passes guest flushes on as fdatasync, so it is
		// crash-safe for a guest file system; unlike cache=none it does not
		// need O_DIRECT, which tmpfs and some overlay setups refuse.
		// aio=threads works everywhere; discard=unmap lets guest TRIM punch
		// holes so sparse disks stay sparse. QEMU's image locking (on by
		// default) stops a second VMM from opening the same disk.
		a = append(a,
			"-drive", "id=root,file="+escape(spec.Disk)+",format=raw,if=none,cache=writeback,aio=threads,discard=unmap",
			"-device", "virtio-blk-device,drive=root")
	}
	if spec.TAP != "" {
		dev := "virtio-net-device,netdev=n0"
		if spec.MAC != "" {
			dev += ",mac=" + spec.MAC
		}
		a = append(a,
			"-netdev", "tap,id=n0,ifname="+escape(spec.TAP)+",script=no,downscript=no",
			"-device", dev)
	}
	if spec.AgentSocket != "" {
		a = append(a,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,path="+escape(spec.AgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+agent.SerialPortName)
	}
	a = append(a,
		"-chardev", "socket,id=qmp,path="+escape(QMPSocket(spec.Dir))+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-pidfile", PIDFile(spec.Dir),
		"-daemonize")
	return a
}

// machineArgs is the part of the command line shared by VMs and the
// acceleration probe: machine, accelerator, CPU model, size, and a serial
// console appended to consoleLog.
func machineArgs(accel string, memMiB, cpus int, consoleLog string) []string {
	a := []string{"-M", machine, "-accel", accel}
	// "host" passes the host CPU through under KVM. TCG cannot emulate the
	// host model; "max" enables every feature TCG implements (the default
	// qemu64 lacks e.g. SSE4.2/POPCNT that distribution userlands probe).
	switch accel {
	case "kvm":
		a = append(a, "-cpu", "host")
	case "tcg":
		a = append(a, "-cpu", "max")
	}
	a = append(a,
		"-m", strconv.Itoa(memMiB)+"M",
		"-smp", strconv.Itoa(cpus),
		// -nographic with -nodefaults creates no stdio devices, which is
		// what makes it compatible with -daemonize.
		"-nographic", "-nodefaults", "-no-reboot",
		"-chardev", "file,id=con0,path="+escape(consoleLog)+",append=on",
		"-serial", "chardev:con0")
	return a
}

// escape quotes a value for QEMU's key=value,key=value option syntax.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
