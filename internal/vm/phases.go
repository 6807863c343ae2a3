package vm

// The phases a VM call reports (progress.Report), in the order a boot goes
// through them. A client shows the phase and its message; tests and the
// TUI may rely on the words.
const (
	// PhaseDisk: the image is copied into the VM's disk (create).
	PhaseDisk = "disk"
	// PhaseVMM: the TAP device is made and the VMM process started.
	PhaseVMM = "vmm"
	// PhaseBoot: the VMM runs; the guest kernel boots.
	PhaseBoot = "boot"
	// PhaseSSH: the guest's network answers; sshd is not up yet.
	PhaseSSH = "ssh"
	// PhaseAgent: sshd answers; the guest agent does not yet.
	PhaseAgent = "agent"
	// PhaseStop: the guest is asked to power off, or the VMM killed.
	PhaseStop = "stop"
	// PhaseRemove: the VM's disk and folder are deleted.
	PhaseRemove = "remove"
)
