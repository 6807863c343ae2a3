package vm

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// pauseDriver is a TEST DOUBLE of a VMM driver with the Pauser ability: its
// "VMM" is a sleep process (so liveness is real), and it keeps the run
// state QMP query-status or Firecracker's GET / would report. It records
// the calls it gets.
type pauseDriver struct {
	mu     sync.Mutex
	paused bool
	calls  []string
}

func (d *pauseDriver) record(c string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, c)
}

func (d *pauseDriver) Name() string { return "qemu" }
func (d *pauseDriver) Start(context.Context, vmm.Spec) (vmm.State, error) {
	return vmm.State{}, errors.New("not used")
}
func (d *pauseDriver) Stop(ctx context.Context, st vmm.State, force bool, _ time.Duration) error {
	d.record("stop")
	if err := proc.Kill(st.PID, 9); err != nil {
		return err
	}
	for t0 := time.Now(); proc.Alive(st.PID, st.StartTime) && time.Since(t0) < 5*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
func (d *pauseDriver) Alive(st vmm.State) bool                  { return proc.Alive(st.PID, st.StartTime) }
func (d *pauseDriver) Recover(context.Context, vmm.State) error { return nil }
func (d *pauseDriver) Pause(context.Context, vmm.State) error   { return d.set("pause", true) }
func (d *pauseDriver) Resume(context.Context, vmm.State) error  { return d.set("resume", false) }
func (d *pauseDriver) Paused(context.Context, vmm.State) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused, nil
}
func (d *pauseDriver) set(c string, paused bool) error {
	d.record(c)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = paused
	return nil
}

// plainDriver is the same TEST DOUBLE without the Pauser ability.
type plainDriver struct{ d pauseDriver }

func (p *plainDriver) Name() string { return "qemu" }
func (p *plainDriver) Start(ctx context.Context, s vmm.Spec) (vmm.State, error) {
	return p.d.Start(ctx, s)
}
func (p *plainDriver) Stop(ctx context.Context, st vmm.State, force bool, t time.Duration) error {
	return p.d.Stop(ctx, st, force, t)
}
func (p *plainDriver) Alive(st vmm.State) bool                         { return p.d.Alive(st) }
func (p *plainDriver) Recover(ctx context.Context, st vmm.State) error { return nil }

// standIn starts a sleep process as a VM's VMM and returns its state JSON.
func standIn(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	start, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(vmm.State{Version: 1, Driver: "qemu", PID: cmd.Process.Pid, StartTime: start})
	return string(b)
}

// TestPauseResume: the paused state comes from what the VMM says (also
// after a daemon restart, through Recover), operations that need a running
// guest say it is paused, a graceful stop resumes the guest first, and a
// driver without the ability is refused by name.
func TestPauseResume(t *testing.T) {
	ctx := context.Background()
	drv := &pauseDriver{}
	s, _ := newServiceWith(t, map[string]vmm.Driver{"qemu": drv})
	insertVM(t, s, "vm1", standIn(t))
	state := func() string {
		t.Helper()
		v, err := s.Get(ctx, "vm1")
		if err != nil {
			t.Fatal(err)
		}
		return v.State
	}
	if got := state(); got != api.StateRunning {
		t.Fatalf("before pause: %s", got)
	}
	if v, err := s.Pause(ctx, "vm1"); err != nil || v.State != api.StatePaused {
		t.Fatalf("pause: %v, state %s", err, v.State)
	}
	if _, err := s.Pause(ctx, "vm1"); err != nil {
		t.Fatalf("pause of a paused VM: %v", err)
	}
	for what, err := range map[string]error{
		"ssh":  func() error { _, err := s.SSHInfo(ctx, "vm1"); return err }(),
		"exec": func() error { _, err := s.AgentSession(ctx, "vm1"); return err }(),
	} {
		if !errors.Is(err, api.ErrPrecondition) || !strings.Contains(err.Error(), "is paused: resume it with `banger vm resume vm1`") {
			t.Errorf("%s of a paused VM: %v", what, err)
		}
	}

	// A new daemon knows only what the VMM says.
	s.mu.Lock()
	s.paused = nil
	s.mu.Unlock()
	if got := state(); got != api.StateRunning {
		t.Fatalf("with nothing asked of the VMM: %s, want running", got)
	}
	if err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != api.StatePaused {
		t.Fatalf("after Recover: %s, want paused", got)
	}

	if v, err := s.Resume(ctx, "vm1"); err != nil || v.State != api.StateRunning {
		t.Fatalf("resume: %v, state %s", err, v.State)
	}
	if _, err := s.Pause(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	drv.mu.Lock()
	drv.calls = nil
	drv.mu.Unlock()
	if v, err := s.Stop(ctx, "vm1", false); err != nil || v.State != api.StateStopped {
		t.Fatalf("stop of a paused VM: %v, state %s", err, v.State)
	}
	if got := strings.Join(drv.calls, " "); got != "resume stop" {
		t.Errorf("stop of a paused VM called %q, want the guest resumed, then stopped", got)
	}
	if _, err := s.Pause(ctx, "vm1"); !errors.Is(err, api.ErrPrecondition) || !strings.Contains(err.Error(), "is stopped, not running") {
		t.Errorf("pause of a stopped VM: %v", err)
	}

	// A driver that cannot pause.
	s2, _ := newServiceWith(t, map[string]vmm.Driver{"qemu": &plainDriver{}})
	insertVM(t, s2, "vm2", standIn(t))
	if _, err := s2.Pause(ctx, "vm2"); !errors.Is(err, api.ErrPrecondition) || !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), "cannot pause and resume guests") {
		t.Errorf("pause under a driver without the ability: %v", err)
	}
}
