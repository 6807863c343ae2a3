package doctor

// Check IDs, as they appear in `banger doctor --json` and in preflight
// errors.
const (
	IDConfig       = "config"
	IDSocketPath   = "socket-path"
	IDRuntime      = "runtime"
	IDRuntimeAgent = "runtime-agent"
	IDRuntimeOwner = "runtime-owner"
	IDQEMU         = "qemu"
	IDFirecracker  = "firecracker"
	IDJailer       = "jailer"
	IDKVM          = "kvm"
	IDKVMGuest     = "kvm-guest"
	IDVMMUser      = "vmm-user"
	IDTUN          = "tun"
	IDNetAdmin     = "net-admin"
	IDVsock        = "vsock"
	IDSSH          = "ssh"
	IDDiskTools    = "disk-tools"
	IDImageTools   = "image-tools"
	IDImageAgent   = "image-agent"
	IDDiskSpace    = "disk-space"
	IDGuestClock   = "guest-clock"
	IDNames        = "vm-names"
	IDShares       = "shared-folders"
)

// anyVM is every purpose that starts a VM, whatever the VMM.
var anyVM = []Purpose{PurposeVMStart, PurposeFirecracker}

// Checks returns every check, in the order `banger doctor` prints them.
// The slice is new on each call; callers may filter it.
func Checks() []Check {
	return []Check{
		{ID: IDConfig, Title: "config file", Run: checkConfig},
		{ID: IDSocketPath, Title: "socket path length", Run: checkSocketPath},
		{ID: IDRuntime, Title: "runtime bundle",
			Concerns: []Purpose{PurposeVMStart, PurposeImageBuild, PurposeFirecracker}, Run: checkRuntime},
		{ID: IDRuntimeOwner, Title: "runtime bundle and VMM binaries safe from other users",
			Concerns: []Purpose{PurposeVMStart, PurposeImageBuild, PurposeFirecracker}, Run: checkRuntimeOwner},
		{ID: IDRuntimeAgent, Title: "guest agent in bundle",
			Concerns: []Purpose{PurposeImageBuild}, Run: checkRuntimeAgent},
		{ID: IDQEMU, Title: "QEMU", Concerns: []Purpose{PurposeVMStart}, Run: checkQEMU},
		{ID: IDFirecracker, Title: "Firecracker", Strict: []Purpose{PurposeFirecracker}, Run: checkFirecracker},
		{ID: IDJailer, Title: "Firecracker jailer", Run: checkJailer},
		{ID: IDKVM, Title: "/dev/kvm", Concerns: []Purpose{PurposeVMStart},
			Strict: []Purpose{PurposeFirecracker}, Run: checkKVM},
		{ID: IDKVMGuest, Title: "KVM runs guests", Concerns: []Purpose{PurposeVMStart},
			Strict: []Purpose{PurposeFirecracker}, Run: checkKVMGuest},
		{ID: IDVMMUser, Title: "VMM user", Concerns: anyVM, Run: checkVMMUser},
		{ID: IDTUN, Title: "/dev/net/tun", Concerns: anyVM, Run: checkTUN},
		{ID: IDNetAdmin, Title: "CAP_NET_ADMIN", Concerns: anyVM, Run: checkNetAdmin},
		{ID: IDVsock, Title: "vsock", Run: checkVsock},
		{ID: IDGuestClock, Title: "guest clock source", Run: checkGuestClock},
		{ID: IDSSH, Title: "ssh client", Concerns: anyVM, Run: checkSSH},
		{ID: IDDiskTools, Title: "VM disk tools", Concerns: anyVM, Run: checkDiskTools},
		{ID: IDImageTools, Title: "image build tools", Concerns: []Purpose{PurposeImageBuild}, Run: checkImageTools},
		{ID: IDImageAgent, Title: "guest agent in images", Run: checkImageAgent},
		{ID: IDNames, Title: "VM names (NAME.banger.internal)", Run: checkNames},
		{ID: IDShares, Title: "shared folders (virtiofsd)", Run: checkShares},
		{ID: IDDiskSpace, Title: "free disk space",
			Concerns: []Purpose{PurposeVMStart, PurposeImageBuild, PurposeFirecracker}, Run: checkDiskSpace},
	}
}
