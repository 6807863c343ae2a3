package vm

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm"
)

// reserveVMMUser picks the uid and gid the VMM of VM id runs as. Without
// Config.VMMIDs (a daemon that is not root) that is nil: the VMM runs as
// the daemon. Otherwise it is the lowest VMM slot of the daemon's
// subordinate ids (see subid.IDs.VMM) whose uid no other VM uses: not
// recorded in the driver state of another VM (running, or dead and not yet
// cleaned up), not reserved by a start in progress, and not the uid of any
// process on the host (a VM this daemon cannot read the state of, a process
// left behind). So every VM that can run at once has ids of its own, and a
// VMM escape cannot reach another VM. The slot is held until release is
// called, by which time the VM's driver state records it (or the start
// failed).
func (s *Service) reserveVMMUser(ctx context.Context, id string) (*vmm.Identity, func(), error) {
	if s.cfg.VMMIDs == nil {
		return nil, func() {}, nil
	}
	ids, err := s.cfg.VMMIDs()
	if err != nil {
		return nil, nil, fmt.Errorf("a root bangerd runs each VMM as a user of its own: %w", err)
	}
	rows, err := store.ListVMsWithDriverState(ctx, s.store.DB)
	if err != nil {
		return nil, nil, err
	}
	used := map[uint32]bool{}
	for _, r := range rows {
		if st, ok, err := driverState(r); err == nil && ok && st.RunAs != nil && r.ID != id {
			used[st.RunAs.UID] = true
		}
	}
	for uid := range processUIDs() {
		used[uid] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, uid := range s.vmmUIDs {
		used[uid] = true
	}
	for slot := range subid.VMMSlots {
		uid, gid, err := ids.VMM(slot)
		if err != nil {
			return nil, nil, err
		}
		if used[uid] {
			continue
		}
		if s.vmmUIDs == nil {
			s.vmmUIDs = map[string]uint32{}
		}
		s.vmmUIDs[id] = uid
		release := func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.vmmUIDs, id)
		}
		return &vmm.Identity{UID: uid, GID: gid}, release, nil
	}
	return nil, nil, fmt.Errorf("all %d VMM user ids are in use: stop some VMs", subid.VMMSlots)
}

// processUIDs returns the uids of the host's processes (the owners of
// /proc/PID).
func processUIDs() map[uint32]bool {
	out := map[uint32]bool{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				out[st.Uid] = true
			}
		}
	}
	return out
}
