package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// A VMM runs from the moment its driver launches it, but the VM's row
// records it only once the driver's Start returns (after the VMM answered
// on its control socket), so a daemon killed in between leaves a VMM that
// no row names: it keeps the VM's disk, sockets and VMM user, and the VM
// cannot start again. The launch marker closes that gap: startLocked
// writes it into the VM's folder before the launch and removes it once the
// row records the VMM (or the start failed and the VMM is gone); Recover
// finds a marker on a VM without a recorded VMM and kills the process that
// holds the VM's disk, which can only be that unrecorded VMM.

// launchMarker is the marker's file name in the VM's folder.
const launchMarker = "vmm-launching"

func (s *Service) launchMarker(id string) string {
	return filepath.Join(s.cfg.Dirs.VMDir(id), launchMarker)
}

// markLaunch writes VM id's launch marker.
func (s *Service) markLaunch(id string) error {
	if err := os.WriteFile(s.launchMarker(id), nil, 0o600); err != nil {
		return fmt.Errorf("mark the vmm launch: %w", err)
	}
	return nil
}

// launchSettled removes VM id's launch marker: the row records the VMM, or
// no VMM runs.
func (s *Service) launchSettled(id string) {
	if err := os.Remove(s.launchMarker(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove the vmm launch marker", "vm", id, "err", err)
	}
}

// endUnrecordedLaunch runs in Recover for a VM whose row records no VMM:
// when its launch marker is there, an earlier daemon died during a launch,
// and the processes that hold the VM's disk (its unrecorded VMM) are
// killed before the marker goes. What it cannot kill is logged, and the
// marker kept for the next start.
func (s *Service) endUnrecordedLaunch(ctx context.Context, row store.VM) {
	if _, err := os.Lstat(s.launchMarker(row.ID)); err != nil {
		return
	}
	disk := s.diskPath(row.ID)
	if _, ok := s.cloneOf(row.ID); ok {
		disk = filepath.Join(s.cfg.Dirs.VMDir(row.ID), overlayName)
	}
	n, err := killHolders(ctx, disk, vmm.DiskAliases(s.drivers)...)
	if e, ok := s.drivers[row.VMM].(vmm.LaunchEnder); ok && err == nil {
		// A VMM that has not opened the disk yet.
		var m int
		m, err = e.EndLaunch(ctx, row.ID)
		n += m
	}
	if n > 0 {
		s.log.Warn("killed the vmm an interrupted launch left running", "vm", row.Name, "processes", n)
	}
	if err != nil {
		s.log.Error("kill the vmm of an interrupted launch", "vm", row.Name, "err", err)
		return
	}
	s.launchSettled(row.ID)
}

// killHolders kills the processes that hold the file at disk open (a VMM
// whose launch no record names), by its path or one of aliases (see
// vmm.DiskAliaser), and waits until they are gone; it returns how many it
// found. A missing file has none.
func killHolders(ctx context.Context, disk string, aliases ...string) (int, error) {
	holders, err := proc.Holding(disk, aliases...)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("find what holds %s: %w", disk, err)
	}
	var errs []error
	for _, p := range holders {
		if err := proc.Signal(p.PID, p.StartTime, syscall.SIGKILL); err != nil {
			errs = append(errs, err)
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs = append(errs, proc.WaitExit(wctx, p.PID, p.StartTime, 0))
		cancel()
	}
	return len(holders), errors.Join(errs...)
}
