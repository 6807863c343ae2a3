package vm

import (
	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
)

// Facts are what the daemon observed about one VM at one moment.
type Facts struct {
	// Desired is the stored desired state (store.Desired*).
	Desired string
	// Op is the operation in progress on the VM: "", "starting" or "stopping".
	Op string
	// HasDriverState reports whether the row records a launched VMM.
	HasDriverState bool
	// StateUnreadable: the row's driver state does not decode or has a
	// version this daemon does not know, so nothing can be observed.
	StateUnreadable bool
	// DriverKnown is false when no driver for the VM's VMM is available, so
	// nothing can be observed.
	DriverKnown bool
	// ProcessAlive: the recorded VMM process exists and is the one launched.
	ProcessAlive bool
	// Paused: that VMM said its guest is paused (vmm.Pauser.Paused).
	Paused bool
}

// DeriveState computes the observed state from facts. It is the only place
// that decides what `vm ls` shows; the table's desired state is an input,
// never the answer.
func DeriveState(f Facts) string {
	switch {
	case f.Desired == store.DesiredCreating:
		return api.StateCreating
	case f.Op == api.StateStarting:
		return api.StateStarting
	case f.Op == api.StateStopping:
		return api.StateStopping
	case f.StateUnreadable:
		return api.StateUnknown
	case !f.HasDriverState:
		return api.StateStopped
	case !f.DriverKnown:
		return api.StateUnknown
	case f.ProcessAlive && f.Paused:
		return api.StatePaused
	case f.ProcessAlive:
		return api.StateRunning
	default:
		// A VMM was launched and is gone, but nobody has cleaned up after it
		// yet (the monitor will): the VM is broken until then.
		return api.StateBroken
	}
}
