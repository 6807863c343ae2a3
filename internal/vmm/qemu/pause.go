package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bangerhq/banger/internal/vmm"
)

// Pause stops the guest's vCPUs (QMP stop); QEMU keeps running. Pausing a
// paused guest succeeds.
func (d *Driver) Pause(ctx context.Context, st vmm.State) error {
	_, err := qmpCall(ctx, st.ControlSocket, "stop")
	return err
}

// Resume lets a paused guest run again (QMP cont). Resuming a running guest
// succeeds.
func (d *Driver) Resume(ctx context.Context, st vmm.State) error {
	_, err := qmpCall(ctx, st.ControlSocket, "cont")
	return err
}

// Paused reports whether QEMU's run state is "paused" (QMP query-status):
// the state stop leaves, not the other states in which no vCPU runs
// (prelaunch, inmigrate, shutdown, ...).
func (d *Driver) Paused(ctx context.Context, st vmm.State) (bool, error) {
	ret, err := qmpCall(ctx, st.ControlSocket, "query-status")
	if err != nil {
		return false, err
	}
	var status struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ret, &status); err != nil {
		return false, fmt.Errorf("qmp query-status: %w", err)
	}
	return status.Status == "paused", nil
}

// qmpCall runs one QMP command without arguments on a connection of its
// own, within qmpTimeout.
func qmpCall(ctx context.Context, path, cmd string) (json.RawMessage, error) {
	if path == "" {
		return nil, errors.New("no qmp socket in state")
	}
	q, err := DialQMP(ctx, path, qmpTimeout)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	ret, err := q.Execute(ctx, cmd, nil)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return ret, nil
}
