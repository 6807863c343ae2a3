package vm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm"
)

func TestReserveVMMUser(t *testing.T) {
	s, _ := newTestService(t)
	ctx := context.Background()
	if id, release, err := s.reserveVMMUser(ctx, "x"); err != nil || id != nil {
		t.Fatalf("without VMMIDs: %v, %v; want nil (the daemon's own user)", id, err)
	} else {
		release()
	}

	// A range far from any account: 3000000000 + 65536 sandbox ids, then
	// the VMM slots.
	ids := subid.IDs{Root: true, UIDs: subid.Range{Start: 3000000000, Count: subid.Need(true)},
		GIDs: subid.Range{Start: 3100000000, Count: subid.Need(true)}}
	s.cfg.VMMIDs = func() (subid.IDs, error) { return ids, nil }
	slot := func(n int) vmm.Identity {
		uid, gid, err := ids.VMM(n)
		if err != nil {
			t.Fatal(err)
		}
		return vmm.Identity{UID: uid, GID: gid}
	}

	// Slot 0 is recorded in a VM's driver state (a running VM).
	b, _ := json.Marshal(vmm.State{Version: vmm.StateVersion, Driver: "qemu", PID: 1, StartTime: 1, RunAs: &vmm.Identity{UID: slot(0).UID, GID: slot(0).GID}})
	insertVM(t, s, "vm1", string(b))

	a, releaseA, err := s.reserveVMMUser(ctx, "a")
	if err != nil || *a != slot(1) {
		t.Fatalf("first start: %v, %v; want slot 1 %v (slot 0 is taken)", a, err, slot(1))
	}
	// A second start while the first is in progress gets its own.
	b2, releaseB, err := s.reserveVMMUser(ctx, "b")
	if err != nil || *b2 != slot(2) {
		t.Fatalf("concurrent start: %v, %v; want slot 2", b2, err)
	}
	releaseA()
	c, releaseC, err := s.reserveVMMUser(ctx, "c")
	if err != nil || *c != slot(1) {
		t.Fatalf("after a release: %v, %v; want slot 1 again", c, err)
	}
	releaseB()
	releaseC()

	// A process running as a slot's uid (left behind, or of a VM whose
	// state cannot be read) keeps that slot from being handed out.
	if os.Geteuid() == 0 {
		sleep := exec.Command("sleep", "30")
		sleep.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: slot(1).UID, Gid: slot(1).GID}}
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { sleep.Process.Kill(); sleep.Wait() }()
		d, release, err := s.reserveVMMUser(ctx, "d")
		if err != nil || *d != slot(2) {
			t.Fatalf("with a process of slot 1's uid: %v, %v; want slot 2", d, err)
		}
		release()
	}

	s.cfg.VMMIDs = func() (subid.IDs, error) { return subid.IDs{}, errors.New("no range (fix: usermod)") }
	if _, _, err := s.reserveVMMUser(ctx, "e"); err == nil || !strings.Contains(err.Error(), "fix: usermod") || !strings.Contains(err.Error(), "a user of its own") {
		t.Fatalf("without ids: %v", err)
	}
}
