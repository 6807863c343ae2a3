package firecracker

import "log/slog"

// SimulatorAccel is the accelerator a simulated VM's state reports.
const SimulatorAccel = "tcg (firecracker simulator)"

// simulatorNote is added to a simulated VM's state notes.
const simulatorNote = "firecracker simulator: this VMM is NOT Firecracker; it serves Firecracker's API and boots the guest under QEMU with TCG"

// NewSimulator returns a driver that runs bin, a Firecracker simulator
// (fcsim's firecracker-simulator), in Firecracker's place. Everything is as
// with Firecracker (the API requests, the jail, the VMM user, the inherited
// descriptors, the TAP the VMM opens by name, the hybrid vsock, stop and
// re-adoption) except that the simulator boots its guest under QEMU with
// TCG and needs no /dev/kvm: Start does not require it, the state reports
// SimulatorAccel and a note saying what runs, the logs say "simulator", and
// the doctor purpose is that of any VM start. It exists to prove the driver
// on hosts where Firecracker cannot run (the daemon uses it only when
// $BANGER_FIRECRACKER_SIMULATOR names the binary); it is never presented as
// Firecracker.
func NewSimulator(bin string, log *slog.Logger) *Driver {
	d := New(bin, log)
	d.sim = true
	d.log = d.log.With("simulator", true)
	return d
}

// Simulated reports whether d runs the Firecracker simulator.
func (d *Driver) Simulated() bool { return d.sim }
