// Package drivers is banger's set of VMM drivers: it builds each one and
// picks the driver for VMs created without --vmm. It is the one place
// outside a driver's own package that knows the drivers by name; the rest
// of banger asks a driver for its abilities (see package vmm).
package drivers

import (
	"errors"
	"log/slog"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// Options are the inputs of Load.
type Options struct {
	// QEMU is the QEMU binary (config vmm.qemu); "" means qemu.DefaultBinary.
	QEMU string
	// RuntimeDir is the runtime bundle, where Firecracker may be.
	RuntimeDir string
	// Default is the configured default (config vmm.default), "" for
	// automatic.
	Default string
	// Accel is the accelerator the daemon chose: "kvm" or "tcg".
	Accel string
	// Log is the daemon's logger.
	Log *slog.Logger
	// FirecrackerSimulator, when set, is the Firecracker simulator binary
	// the firecracker driver runs instead of Firecracker (see
	// firecracker.NewSimulator); the default is then QEMU unless
	// configured.
	FirecrackerSimulator string
	// JailerSimulator, when set with FirecrackerSimulator, is the jailer
	// simulator that jails it (see package jailersim); without it the
	// simulator runs unjailed.
	JailerSimulator string
	// ChrootBase is where the jailer builds its chroots (banger's state
	// folder's jailer/); "" runs Firecracker unjailed.
	ChrootBase string
}

// Set is the loaded drivers and the default among them.
type Set struct {
	// Drivers maps names to drivers. Firecracker is always there, so that
	// `--vmm firecracker` on a host without it fails in preflight with the
	// fix rather than as an unknown VMM.
	Drivers map[string]vmm.Driver
	// Default is the name of the driver for VMs created without --vmm, and
	// Why says why, for the log.
	Default, Why string
}

// Load builds the drivers. The default is the configured one, else
// Firecracker where its binary is present and KVM can run guests, else
// QEMU.
func Load(opts Options) Set {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := qemu.New(opts.QEMU, log)
	fcBin, fcErr := firecracker.FindBinary(opts.RuntimeDir)
	if fcErr != nil {
		fcBin = firecracker.DefaultBinary
	}
	fc := firecracker.New(fcBin, log)
	jailerBin, jailerErr := firecracker.FindJailer(opts.RuntimeDir)
	jailerSim := false
	if opts.FirecrackerSimulator != "" {
		fc = firecracker.NewSimulator(opts.FirecrackerSimulator, log)
		log.Warn("the firecracker driver runs the firecracker simulator, NOT Firecracker", "component", "vmm", "simulator", opts.FirecrackerSimulator)
		fcErr = errors.New("the firecracker driver runs the firecracker simulator ($BANGER_FIRECRACKER_SIMULATOR), which is not Firecracker")
		// Only the jailer simulator jails the simulator: it leaves it a
		// launcher for QEMU, which is not in the jail.
		jailerBin, jailerErr, jailerSim = opts.JailerSimulator, nil, true
		if jailerBin == "" {
			jailerErr = errors.New("no jailer simulator ($BANGER_JAILER_SIMULATOR)")
		} else {
			log.Warn("the firecracker simulator is jailed by the jailer simulator, NOT the jailer", "component", "vmm", "simulator", jailerBin)
		}
	}
	switch {
	case opts.ChrootBase == "":
	case jailerErr != nil:
		log.Info("firecracker runs unjailed", "component", "vmm", "why", jailerErr)
	default:
		fc.WithJailer(jailerBin, opts.ChrootBase, jailerSim)
	}
	s := Set{Drivers: map[string]vmm.Driver{q.Name(): q, fc.Name(): fc}}
	s.Default, s.Why = chooseDefault(opts.Default, fcErr, opts.Accel, q.Name(), fc.Name())
	return s
}

func chooseDefault(configured string, fcErr error, accel, qemuName, fcName string) (string, string) {
	switch {
	case configured != "":
		return configured, "config vmm.default"
	case fcErr != nil:
		return qemuName, fcErr.Error()
	case accel != "kvm":
		return qemuName, "KVM cannot run guests here, and Firecracker needs it"
	default:
		return fcName, "firecracker binary present and KVM runs guests"
	}
}
