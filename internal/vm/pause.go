package vm

import (
	"context"
	"fmt"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
)

// A VM is paused when its VMM says so (vmm.Pauser.Paused), not when a row
// says so: the daemon asks the VMM after every pause and resume and when it
// re-adopts a VMM at start, and keeps the answer per VMM process (pid and
// start time), so a VM started again is never taken for paused.

// pauseSeen is what a VM's VMM last said about its run state.
type pauseSeen struct {
	pid    int
	start  uint64
	paused bool
}

// observePaused asks the VMM of VM id (state st) whether its guest is
// paused and keeps the answer. A driver without the ability has nothing to
// say (never paused); an error is logged and forgets what was seen.
func (s *Service) observePaused(ctx context.Context, id string, drv vmm.Driver, st vmm.State) {
	p, ok := drv.(vmm.Pauser)
	if !ok {
		return
	}
	paused, err := p.Paused(ctx, st)
	if err != nil {
		s.log.Warn("cannot read whether the guest is paused", "vm_id", id, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == nil {
		s.paused = map[string]pauseSeen{}
	}
	if err != nil {
		delete(s.paused, id)
		return
	}
	s.paused[id] = pauseSeen{pid: st.PID, start: st.StartTime, paused: paused}
}

// isPaused reports whether the VMM of VM id, the process st names, said
// last that its guest is paused.
func (s *Service) isPaused(id string, st vmm.State) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.paused[id]
	return ok && p.paused && p.pid == st.PID && p.start == st.StartTime
}

// Pause freezes a running VM's guest where it is (its VMM keeps its
// memory); pausing a paused VM succeeds.
func (s *Service) Pause(ctx context.Context, ref string) (api.VM, error) {
	return s.pauseOrResume(ctx, ref, true)
}

// Resume lets a paused VM's guest run again and then puts its clock right
// (it stood still while paused); resuming a running VM succeeds.
func (s *Service) Resume(ctx context.Context, ref string) (api.VM, error) {
	return s.pauseOrResume(ctx, ref, false)
}

func (s *Service) pauseOrResume(ctx context.Context, ref string, pause bool) (api.VM, error) {
	verb, op := "resume", "resuming"
	if pause {
		verb, op = "pause", "pausing"
	}
	row, unlock, err := s.getLocked(ctx, ref, op)
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	st, drv, err := s.liveVMM(row)
	if err != nil {
		return api.VM{}, err
	}
	p, err := vmm.AsPauser(drv)
	if err != nil {
		return api.VM{}, api.Errorf(api.ErrPrecondition, "%s vm %q: %w", verb, row.Name, err)
	}
	do := p.Resume
	if pause {
		do = p.Pause
	}
	// Asked first: a VMM is not asked to pause a paused guest (nor to
	// resume a running one), which not every VMM takes kindly.
	s.observePaused(ctx, row.ID, drv, st)
	if s.isPaused(row.ID, st) != pause {
		err = do(ctx, st)
		s.observePaused(context.WithoutCancel(ctx), row.ID, drv, st)
	}
	if err != nil {
		return api.VM{}, fmt.Errorf("%s vm %q: %w", verb, row.Name, err)
	}
	if s.isPaused(row.ID, st) != pause {
		return api.VM{}, fmt.Errorf("%s vm %q: %s accepted it, but does not report the guest %s", verb, row.Name, drv.Name(), map[bool]string{true: "paused", false: "running"}[pause])
	}
	s.log.Info("vm "+verb+"d", "vm", row.Name)
	if !pause {
		// The guest's clock stood still while it was paused.
		if _, err := s.syncClock(ctx, row.ID, st); err != nil {
			s.log.Warn("cannot put the guest clock right after resume", "vm", row.Name, "err", err)
		}
	}
	unlock()
	return s.view(row), nil
}

// liveVMM returns the driver state and driver of VM row's running VMM, or
// ErrPrecondition saying why there is none.
func (s *Service) liveVMM(row store.VM) (vmm.State, vmm.Driver, error) {
	st, ok, err := driverState(row)
	if err != nil {
		return st, nil, untouchable(row.Name, err)
	}
	drv := s.drivers[row.VMM]
	if !ok || drv == nil || !drv.Alive(st) {
		return st, nil, api.Errorf(api.ErrPrecondition, "VM %q is %s, not running: start it with `banger vm start %s`", row.Name, s.view(row).State, row.Name)
	}
	return st, drv, nil
}

// errPaused is the error of an operation that needs the guest to run.
func errPaused(name string) error {
	return api.Errorf(api.ErrPrecondition, "VM %q is paused: resume it with `banger vm resume %s`", name, name)
}
