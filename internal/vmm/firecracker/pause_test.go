package firecracker

import (
	"context"
	"testing"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// TestPauseOnSimulator pauses and resumes a VM on the simulator (which
// checks every request against Firecracker's API spec) through the
// driver's Pauser ability, and reads the state back with GET /; a paused
// VM is recovered after a daemon restart.
func TestPauseOnSimulator(t *testing.T) {
	log, _ := vmmtest.Logger(t)
	d := testDriver(t, fakeBinary(t), log)
	ctx := context.Background()
	st, err := d.Start(ctx, testSpec(t, "pauser"))
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	vmmtest.CheckPauser(t, d, st, func(step string, paused bool) {
		info, _ := NewClient(st.ControlSocket, apiTimeout).InstanceInfo(ctx)
		if want := map[bool]string{true: fcapi.StatePaused, false: fcapi.StateRunning}[paused]; info.State != want {
			t.Fatalf("after %s: GET / says %q, want %q", step, info.State, want)
		}
	})
	if err := d.Pause(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := d.Recover(ctx, st); err != nil {
		t.Fatalf("recover a paused VM: %v", err)
	}
}
