package firecracker

import (
	"context"
	"errors"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// Pause stops the guest's vCPUs: PATCH /vm {"state": "Paused"}.
func (d *Driver) Pause(ctx context.Context, st vmm.State) error {
	return d.setVMState(ctx, st, fcapi.VMPaused)
}

// Resume lets a paused guest run again: PATCH /vm {"state": "Resumed"}.
func (d *Driver) Resume(ctx context.Context, st vmm.State) error {
	return d.setVMState(ctx, st, fcapi.VMResumed)
}

// Paused reports whether GET / says the instance is "Paused".
func (d *Driver) Paused(ctx context.Context, st vmm.State) (bool, error) {
	if st.ControlSocket == "" {
		return false, errors.New("no api socket in state")
	}
	info, err := NewClient(st.ControlSocket, apiTimeout).InstanceInfo(ctx)
	return info.State == fcapi.StatePaused, err
}

func (d *Driver) setVMState(ctx context.Context, st vmm.State, state string) error {
	if st.ControlSocket == "" {
		return errors.New("no api socket in state")
	}
	return NewClient(st.ControlSocket, apiTimeout).Patch(ctx, "/vm", VMState(state))
}
