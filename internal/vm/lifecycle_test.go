package vm

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// sleepDriver is a test double of a VMM driver (named as such): its "VMM"
// is a real `sleep` process, identified by pid and start time as the real
// drivers do (package proc), so Alive, Stop and Recover observe a real
// process. Stop waits for release (when set) before killing, so a test can
// hold a stop in progress.
type sleepDriver struct {
	stopping chan struct{} // receives once per Stop, when set
	release  chan struct{} // Stop waits for it, when set
}

func (d *sleepDriver) Name() string { return "sleep" }

func (d *sleepDriver) Start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return vmm.State{}, err
	}
	go cmd.Wait()
	st, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		return vmm.State{}, err
	}
	return vmm.State{Version: vmm.StateVersion, Driver: "sleep", PID: cmd.Process.Pid, StartTime: st}, nil
}

func (d *sleepDriver) Stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	if d.stopping != nil {
		d.stopping <- struct{}{}
	}
	if d.release != nil {
		<-d.release
	}
	if err := proc.Signal(st.PID, st.StartTime, syscall.SIGKILL); err != nil && proc.Alive(st.PID, st.StartTime) {
		return err
	}
	return proc.WaitExit(ctx, st.PID, st.StartTime, 0)
}

func (d *sleepDriver) Alive(st vmm.State) bool { return proc.Alive(st.PID, st.StartTime) }

func (d *sleepDriver) Recover(ctx context.Context, st vmm.State) error {
	if !d.Alive(st) {
		return vmm.ErrNotRunning
	}
	return nil
}

// newSleepService returns a service whose only driver is drv.
func newSleepService(t *testing.T, drv *sleepDriver) *Service {
	t.Helper()
	s, _ := newServiceWith(t, map[string]vmm.Driver{drv.Name(): drv})
	return s
}

// addVM inserts a VM row (state desired) with its folder holding a disk
// file, as Create leaves them.
func addVM(t *testing.T, s *Service, name, desired string) store.VM {
	t.Helper()
	ctx := context.Background()
	im := store.Image{ID: "img-" + name, Name: "img-" + name, Source: "test", Path: "/nonexistent"}
	if err := store.InsertImage(ctx, s.store.DB, &im); err != nil {
		t.Fatal(err)
	}
	row := store.VM{ID: store.NewID(), Name: name, ImageID: im.ID, CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30,
		Kernel: "/nonexistent/vmlinux", MAC: "52:54:00:00:00:" + name[:2], VMM: "sleep", DesiredState: desired}
	if err := store.InsertVM(ctx, s.store.DB, &row); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.cfg.Dirs.VMDir(row.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.diskPath(row.ID), []byte("disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	return row
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestDeleteRemovesRowFirst: when the folder cannot be removed, the VM is
// gone all the same (no row whose disk is half deleted), the error says the
// folder is left, and the next daemon start removes it.
func TestDeleteRemovesRowFirst(t *testing.T) {
	testhost.NeedRoot(t, "an immutable file (chattr +i) is how this test makes a folder that cannot be removed")
	tools := testhost.NeedTools(t, "chattr")
	ctx := context.Background()
	s := newSleepService(t, &sleepDriver{})
	row := addVM(t, s, "dev", store.DesiredStopped)
	disk := s.diskPath(row.ID)
	if out, err := exec.Command(tools["chattr"], "+i", disk).CombinedOutput(); err != nil {
		testhost.Skip(t, "chattr +i on %s: %v: %s", disk, err, out)
	}
	defer exec.Command(tools["chattr"], "-i", disk).Run()

	err := s.Delete(ctx, "dev", false)
	if err == nil || !strings.Contains(err.Error(), `vm "dev" is deleted but its folder is not`) {
		t.Fatalf("delete with a folder that cannot go: %v", err)
	}
	if _, err := s.Get(ctx, "dev"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("after delete the VM is still there: %v", err)
	}
	if !exists(s.cfg.Dirs.VMDir(row.ID)) {
		t.Fatal("the folder went, so this test proved nothing")
	}

	exec.Command(tools["chattr"], "-i", disk).Run()
	if err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(s.cfg.Dirs.VMDir(row.ID)) {
		t.Error("the next start did not remove the folder without a row")
	}
}

// TestRecoverSweepsFolders: at start, folders without a row and half-created
// VMs go; the folders of VMs, and anything not named like a VM folder, stay.
func TestRecoverSweepsFolders(t *testing.T) {
	ctx := context.Background()
	s := newSleepService(t, &sleepDriver{})
	kept := addVM(t, s, "kept", store.DesiredStopped)
	half := addVM(t, s, "half", store.DesiredCreating)
	orphan := s.cfg.Dirs.VMDir(store.NewID())
	other := filepath.Join(s.cfg.Dirs.VMsDir(), "not-a-vm")
	for _, d := range []string{orphan, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(s.cfg.Dirs.VMDir(kept.ID)) || !exists(other) {
		t.Error("recover removed a VM's folder or a folder it does not own")
	}
	if exists(orphan) || exists(s.cfg.Dirs.VMDir(half.ID)) {
		t.Error("recover left a folder without a VM")
	}
	if _, err := s.Get(ctx, "half"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("half-created VM still listed: %v", err)
	}
	if _, err := s.Get(ctx, "kept"); err != nil {
		t.Errorf("kept VM: %v", err)
	}
}

// startSleeper records a running "VMM" for row, as startLocked does.
func startSleeper(t *testing.T, s *Service, drv *sleepDriver, row *store.VM) vmm.State {
	t.Helper()
	st, err := drv.Start(context.Background(), vmm.Spec{})
	if err != nil {
		testhost.Skip(t, "cannot run sleep: %v", err)
	}
	t.Cleanup(func() { proc.Signal(st.PID, st.StartTime, syscall.SIGKILL) })
	b, _ := json.Marshal(st)
	row.DriverState = string(b)
	row.DesiredState = store.DesiredRunning
	if err := store.UpdateVM(context.Background(), s.store.DB, row); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestShutdownWaitsForMonitors: a monitor that is recording a dead VMM
// finishes its store writes before Shutdown returns (so none comes after
// the daemon closes the store), and no monitor starts after Shutdown.
func TestShutdownWaitsForMonitors(t *testing.T) {
	drv := &sleepDriver{stopping: make(chan struct{}, 1), release: make(chan struct{})}
	s := newSleepService(t, drv)
	row := addVM(t, s, "dev", store.DesiredStopped)
	st := startSleeper(t, s, drv, &row)
	s.watch(row.ID, st)
	proc.Signal(st.PID, st.StartTime, syscall.SIGKILL) // the VMM dies

	select { // the monitor noticed and is cleaning up (in Stop)
	case <-drv.stopping:
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor did not notice the dead VMM")
	}
	done := make(chan struct{})
	go func() { s.Shutdown(); close(done) }()
	select {
	case <-done:
		t.Fatal("Shutdown returned while a monitor was still working")
	case <-time.After(300 * time.Millisecond):
	}
	close(drv.release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the monitor finished")
	}
	got, err := store.GetVM(context.Background(), s.store.DB, row.ID)
	if err != nil || got.DesiredState != store.DesiredStopped || !strings.Contains(got.LastError, "exited unexpectedly") {
		t.Fatalf("the monitor's record is incomplete after Shutdown: %+v, %v", got, err)
	}

	// After Shutdown, watch starts nothing.
	s.watch(row.ID, st)
	waited := make(chan struct{})
	go func() { s.monitors.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(time.Second):
		t.Fatal("a monitor started after Shutdown")
	}
}

// TestShutdownDoesNotWaitForALock: a monitor waiting for a VM's lock (held
// by a long operation) gives up at Shutdown.
func TestShutdownDoesNotWaitForALock(t *testing.T) {
	drv := &sleepDriver{}
	s := newSleepService(t, drv)
	row := addVM(t, s, "dev", store.DesiredStopped)
	st := startSleeper(t, s, drv, &row)
	unlock := s.lock(row.ID, "") // an operation that does not mark itself
	defer unlock()
	s.watch(row.ID, st)
	proc.Signal(st.PID, st.StartTime, syscall.SIGKILL)
	time.Sleep(time.Second) // the monitor ticks (500 ms) and waits for the lock

	done := make(chan struct{})
	go func() { s.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown waited for a monitor blocked on a VM's lock")
	}
}

// TestErrorsNameTheVMOnce: each layer wraps once, so the VM is named once
// (`delete vm "dev": ...`, not `delete vm "dev": stop vm "dev": ...`).
func TestErrorsNameTheVMOnce(t *testing.T) {
	drv := &sleepDriver{}
	s := newSleepService(t, drv)
	row := addVM(t, s, "dev", store.DesiredStopped)
	startSleeper(t, s, drv, &row)
	delete(s.drivers, "sleep") // a VMM this daemon cannot control
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"delete vm": func() error { return s.Delete(ctx, "dev", true) },
		"stop vm":   func() error { _, err := s.Stop(ctx, "dev", true); return err },
	} {
		err := call()
		if err == nil || !strings.HasPrefix(err.Error(), name+` "dev": `) || strings.Count(err.Error(), `"dev"`) != 1 {
			t.Errorf("%s: error %q, want it to name the VM once, first", name, err)
		}
		if !errors.Is(err, api.ErrPrecondition) {
			t.Errorf("%s: error %v lost its kind", name, err)
		}
	}
}

// TestSSHProbe: a slow sshd (its banner after two seconds, as a loaded TCG
// guest gives it) is waited for, not given up on and asked again.
func TestSSHProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				time.Sleep(2 * time.Second)
				c.Write([]byte("SSH-2.0-OpenSSH_9.2p1\r\n"))
			}()
		}
	}()
	ctx := context.Background()
	if got := sshProbe(ctx, ln.Addr().String()); got != sshBanner {
		t.Errorf("slow sshd: %v, want the banner", got)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := silent.Accept()
		if err == nil {
			c.Write([]byte("HTTP/1.1 400\r\n"))
			c.Close()
		}
	}()
	if got := sshProbe(ctx, silent.Addr().String()); got != sshAccepted {
		t.Errorf("not an sshd: %v, want accepted without a banner", got)
	}
	addr := silent.Addr().String()
	silent.Close()
	if got := sshProbe(ctx, addr); got != sshRefused {
		t.Errorf("nothing listening: %v, want refused (the host answered)", got)
	}
}

// holdDisk starts a process that holds row's disk open, as a VMM does, in
// a session of its own (as a VMM runs, so it outlives its launcher).
func holdDisk(t *testing.T, s *Service, row store.VM) proc.ID {
	t.Helper()
	return holdFile(t, s.diskPath(row.ID))
}

// holdFile starts a process that holds the file at p open.
func holdFile(t *testing.T, p string) proc.ID {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "600")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		testhost.Skip(t, "cannot run sleep: %v", err)
	}
	go cmd.Wait()
	st, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	id := proc.ID{PID: cmd.Process.Pid, StartTime: st}
	t.Cleanup(func() { proc.Signal(id.PID, id.StartTime, syscall.SIGKILL) })
	return id
}

// TestRecoverKillsUnrecordedLaunch: a daemon killed after its driver
// launched a VMM but before the row recorded it leaves the launch marker
// and a VMM no row names. The next start kills that VMM (the holder of the
// disk) and removes the marker; a VM without the marker keeps whatever
// holds its disk, and a VM whose row records its VMM keeps it.
func TestRecoverKillsUnrecordedLaunch(t *testing.T) {
	ctx := context.Background()
	drv := &sleepDriver{}
	s := newSleepService(t, drv)
	crashed := addVM(t, s, "crashed", store.DesiredStopped)
	if err := s.markLaunch(crashed.ID); err != nil {
		t.Fatal(err)
	}
	orphan := holdDisk(t, s, crashed)
	quiet := addVM(t, s, "quiet", store.DesiredStopped)
	reader := holdDisk(t, s, quiet)
	recorded := addVM(t, s, "recorded", store.DesiredStopped)
	if err := s.markLaunch(recorded.ID); err != nil {
		t.Fatal(err)
	}
	vmmState := startSleeper(t, s, drv, &recorded)

	if err := s.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if proc.Alive(orphan.PID, orphan.StartTime) {
		t.Error("the VMM of the interrupted launch still runs")
	}
	if !proc.Alive(reader.PID, reader.StartTime) {
		t.Error("a process holding the disk of a VM without a launch marker was killed")
	}
	if !proc.Alive(vmmState.PID, vmmState.StartTime) {
		t.Error("the recorded VMM was killed")
	}
	for _, row := range []store.VM{crashed, recorded} {
		if exists(s.launchMarker(row.ID)) {
			t.Errorf("VM %s keeps its launch marker", row.Name)
		}
	}
	if v, err := s.Get(ctx, "recorded"); err != nil || v.State != api.StateRunning {
		t.Errorf("the recorded VM: %+v, %v", v, err)
	}
}

// markerDriver is a test double of a VMM driver (named as such) whose
// Start notes whether the VM's launch marker is there, and fails.
type markerDriver struct {
	sleepDriver
	marker string
	seen   bool
}

func (d *markerDriver) Start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	d.seen = exists(d.marker)
	return vmm.State{}, errors.New("no vmm here")
}

// TestLaunchMarkerSpansTheLaunch: the marker is there while the driver
// launches, and gone after a failed start (the driver left nothing).
func TestLaunchMarkerSpansTheLaunch(t *testing.T) {
	drv := &markerDriver{}
	s, _ := newServiceWith(t, map[string]vmm.Driver{"sleep": drv})
	row := addVM(t, s, "dev", store.DesiredStopped)
	drv.marker = s.launchMarker(row.ID)
	if err := s.startLocked(context.Background(), &row); err == nil || !strings.Contains(err.Error(), "no vmm here") {
		t.Fatalf("start with a failing driver: %v", err)
	}
	if !drv.seen {
		t.Error("no launch marker while the driver launched")
	}
	if exists(drv.marker) {
		t.Error("the launch marker outlived a failed start")
	}
}
