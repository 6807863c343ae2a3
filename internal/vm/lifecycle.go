package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
)

// preflightStart checks what booting needs before anything is changed: the
// host checks shared with `banger doctor` (runtime bundle, the VMM binary,
// TUN, privileges, disk tools). Without them (tests) it checks the kernel.
func (s *Service) preflightStart(ctx context.Context, drv vmm.Driver) error {
	if s.cfg.Preflight != nil {
		return s.cfg.Preflight(ctx, drv)
	}
	if err := s.cfg.Runtime.CheckKernel(); err != nil {
		return api.Errorf(api.ErrPrecondition, "%w", err)
	}
	return nil
}

// getLocked finds the VM ref names, takes its operation lock marking op
// in progress (giving up when ctx ends: a client that hangs up stops
// waiting), and reads the row again under the lock. The caller defers
// unlock, which may also be called early.
func (s *Service) getLocked(ctx context.Context, ref, op string) (store.VM, func(), error) {
	row, err := s.get(ctx, ref)
	if err != nil {
		return row, func() {}, err
	}
	unlock, err := s.lockCtx(ctx, row.ID, op)
	if err != nil {
		return row, unlock, err
	}
	row, err = s.get(ctx, row.ID)
	return row, unlock, err
}

// Start boots a stopped VM and waits until it answers SSH. Starting a running
// VM returns it unchanged.
func (s *Service) Start(ctx context.Context, ref string) (api.VM, error) {
	row, unlock, err := s.getLocked(ctx, ref, api.StateStarting)
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	if row.DesiredState == store.DesiredCreating {
		return api.VM{}, api.Errorf(api.ErrPrecondition, "VM %q is still being created", row.Name)
	}
	if _, _, err := driverState(row); err != nil {
		return api.VM{}, untouchable(row.Name, err)
	}
	if f, _ := s.facts(row); f.ProcessAlive {
		unlock()
		return s.view(row), nil
	}
	if err := s.preflightStart(ctx, s.drivers[row.VMM]); err != nil {
		return api.VM{}, err
	}
	if err := s.startLocked(ctx, &row); err != nil {
		return api.VM{}, fmt.Errorf("start vm %q: %w", row.Name, err)
	}
	unlock()
	return s.view(row), nil
}

// startLocked launches the VMM for row and waits for SSH. The caller holds
// the VM's lock and names the VM in the error. On failure the VMM and TAP
// are removed, the VM is left stopped with LastError set, and the error
// includes the console tail.
func (s *Service) startLocked(ctx context.Context, row *store.VM) (err error) {
	return s.bootLocked(ctx, row, nil)
}

// bootLocked is startLocked that, given a clone, starts the VM from the
// clone's template instead of booting its kernel, and gives it its own
// identity before waiting for SSH.
func (s *Service) bootLocked(ctx context.Context, row *store.VM, c *clone) (err error) {
	s.setOp(row.ID, api.StateStarting)
	steps := s.stepClock(row.Name)
	drv := s.drivers[row.VMM]
	progress.Report(ctx, api.Progress{Phase: PhaseVMM, Message: "starting " + drv.Name()})
	if err := s.net.EnsureBridge(ctx); err != nil {
		return err
	}
	shares, err := s.shares(ctx, *row)
	if err != nil {
		return err
	}
	runAs, release, err := s.reserveVMMUser(ctx, row.ID)
	if err != nil {
		return api.Errorf(api.ErrPrecondition, "%w", err)
	}
	defer release() // by then the row's driver state records it
	owner := vmm.Self()
	if runAs != nil {
		owner = *runAs
	}
	disk, backing, err := s.vmDisk(row.ID)
	if err != nil {
		return api.Errorf(api.ErrPrecondition, "%w: remove the VM (`banger vm rm %s`)", err, row.Name)
	}
	tap := network.TAPName(row.ID)
	steps.done("bridge, shares, vmm user")
	if err := s.net.CreateTAP(tap, row.MAC, row.IP, owner); err != nil {
		return err
	}
	steps.done("tap")
	spec := vmm.Spec{
		ID: row.ID, Name: row.Name, Dir: s.cfg.Dirs.VMDir(row.ID),
		CPUs: row.CPUs, MemoryMiB: row.MemoryMiB,
		Kernel: row.Kernel, Initrd: row.Initrd, KernelArgs: row.KernelArgs,
		Disk: disk, DiskBacking: backing, TAP: tap, MAC: row.MAC,
		ConsoleLog: s.consoleLog(row.ID), Accel: s.cfg.Accel,
		Agent: true, VsockCID: row.VsockCID,
		RunAs:  runAs,
		Shares: shares,
	}
	if c != nil && vmm.SnapshotsByPath(drv) {
		spec.MemoryFile = filepath.Join(s.templateDir(c.m.Key), tplRAM)
		spec.IncomingState = filepath.Join(s.templateDir(c.m.Key), tplState)
	} else if c != nil {
		spec.MemoryFile = memPath(c.mem)
		spec.IncomingState = filepath.Join(s.templateDir(c.m.Key), tplState)
	}
	// Mark where this boot's console output starts, for the failure tail.
	consoleStart := fileSize(spec.ConsoleLog)
	if err := s.markLaunch(row.ID); err != nil {
		return s.failStart(row, errors.Join(err, s.deleteTAP(tap)), spec.ConsoleLog, consoleStart)
	}
	st, err := drv.Start(ctx, spec)
	steps.done("vmm start")
	if err != nil {
		s.launchSettled(row.ID) // the driver leaves nothing running
		if spec.Accel == "kvm" {
			// Some nested hosts make QEMU abort at once under KVM
			// (failed to set MSR ...) rather than hang.
			err = fmt.Errorf("%w%s", err, kvmHint)
		}
		return s.failStart(row, errors.Join(err, s.deleteTAP(tap)), spec.ConsoleLog, consoleStart)
	}
	b, _ := json.Marshal(st)
	row.DriverState = string(b)
	row.DesiredState = store.DesiredRunning
	row.StartedAt = time.Now().UTC()
	row.LastError = ""
	if err := store.UpdateVM(context.WithoutCancel(ctx), s.store.DB, row); err != nil {
		err = errors.Join(err, stopErr(drv.Stop(context.WithoutCancel(ctx), st, true, 0)), s.deleteTAP(tap))
		if !drv.Alive(st) {
			s.launchSettled(row.ID)
		}
		return err
	}
	s.launchSettled(row.ID)
	s.log.Info("vmm started", "vm", row.Name, "pid", st.PID, "accel", st.Accel)
	progress.Report(ctx, api.Progress{Phase: PhaseBoot, Message: bootMessage(drv, st)})
	s.watch(row.ID, st)
	steps.done("record the vmm")

	if c != nil {
		err = s.identityAndSSH(ctx, row, drv, st, c, consoleStart, steps)
	} else {
		err = s.waitForSSH(ctx, row, drv, st, consoleStart, nil)
		steps.done("ssh and agent ready")
	}
	if err == nil {
		err = s.mountShares(ctx, *row, st)
	}
	if err != nil {
		s.unwatch(row.ID)
		s.dropAgentSession(st.AgentSocket)
		err = errors.Join(err, stopErr(drv.Stop(context.WithoutCancel(ctx), st, true, 0)), s.deleteTAP(tap))
		return s.failStart(row, err, spec.ConsoleLog, consoleStart)
	}
	s.log.Info("vm ready", "vm", row.Name, "boot", time.Since(row.StartedAt).Round(time.Millisecond))
	// The guest's clock starts from its RTC, and TCG boots are slow: set it
	// before anyone uses the VM. A clone's identity set it already, but
	// only to the host's time when the request was sent: a clone just
	// restored under TCG takes up to seconds to reach that step (measured
	// 0.6-1.3 s behind with two clones at once on the Firecracker
	// simulator), so it is measured and put right here too. A failure is
	// the keeper's to retry.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if off, err := s.syncClock(cctx, row.ID, st); err != nil {
		s.log.Warn("cannot set the guest clock", "vm", row.Name, "err", err)
	} else {
		last, _ := s.lastClock(row.ID)
		s.log.Info("guest clock set", "vm", row.Name, "offset", off, "rtt", last.rtt)
	}
	steps.done("clock")
	s.openForwards(ctx, *row)
	return nil
}

// identityAndSSH gives the clone row (running as st) its identity and
// waits for its SSH and agent, both at once: sshd's first answer costs the
// guest an exec of sshd, which TCG translates anew in every clone, and
// the guest answers as soon as its address and host key are in place, so
// the wait for the banner runs while the rest of the identity is written.
func (s *Service) identityAndSSH(ctx context.Context, row *store.VM, drv vmm.Driver, st vmm.State, c *clone, consoleStart int64, steps *stepClock) error {
	progress.Report(ctx, api.Progress{Phase: PhaseAgent, Message: "the clone runs; giving it its own identity"})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan error, 1)
	netUp := make(chan struct{})
	upOnce := sync.OnceFunc(func() {
		close(netUp)
		steps.done("identity: reachable")
	})
	go func() { ready <- s.waitForSSH(wctx, row, drv, st, consoleStart, netUp) }()
	err := s.giveIdentity(ctx, row, st, c, upOnce)
	upOnce()
	steps.done("identity")
	if err != nil {
		cancel()
		<-ready
		return err
	}
	err = <-ready
	steps.done("ssh and agent ready")
	return err
}

// failStart records err on the row (stopped, no driver state) and returns it
// with the tail of this boot's console output (and, joined, a failure to
// record it).
func (s *Service) failStart(row *store.VM, err error, consoleLog string, from int64) error {
	row.DesiredState = store.DesiredStopped
	row.DriverState = ""
	row.LastError = err.Error()
	if uerr := store.UpdateVM(context.Background(), s.store.DB, row); uerr != nil {
		err = errors.Join(err, fmt.Errorf("record the failed start: %w", uerr))
	}
	s.unwatch(row.ID)
	tail := consoleTail(consoleLog, from, 25)
	if tail == "" {
		return fmt.Errorf("%w\n--- the serial console (%s) is empty: the guest kernel printed nothing ---", err, consoleLog)
	}
	return fmt.Errorf("%w\n--- last lines of the serial console (%s) ---\n%s", err, consoleLog, tail)
}

// kvmHint ends an error of a VM that failed to boot under KVM.
const kvmHint = ": KVM may be unable to run guests on this host (for example inside a nested VM); use TCG with BANGER_ACCEL=tcg or `vmm.accel = \"tcg\"` in config.toml"

// waitForSSH waits until the guest is ready (its errors do not name the VM:
// the caller does): its sshd sends its banner AND
// its guest agent answers a ping, so "ready" means the guest itself
// answered. It fails early when the VMM exits, when the console shows no
// progress for StallTimeout before SSH is up (a guest that hangs, as KVM
// guests do on some nested hosts), or after BootTimeout. When netUp
// (which may be nil) closes, the guest's address has just been set: a
// connection attempt that has had no answer yet is given up and made
// again at once, as is the pause between attempts (a clone's address
// comes up in its identity call, well after the first attempt).
func (s *Service) waitForSSH(ctx context.Context, row *store.VM, drv vmm.Driver, st vmm.State, consoleStart int64, netUp <-chan struct{}) error {
	start := time.Now()
	deadline := start.Add(s.cfg.BootTimeout)
	lastSize, lastProgress := consoleStart, time.Now()
	addr := net.JoinHostPort(row.IP, "22")
	var sshAt time.Time
	var agentErr error
	phase := PhaseBoot // the phase reported last (startLocked reported boot)
	for {
		if sshAt.IsZero() {
			answer := s.probeSSH(ctx, addr, netUp)
			if answer == sshSilent && chanClosed(netUp) {
				netUp = nil
				continue // the address is up now: again at once
			}
			if answer >= sshAccepted {
				// The guest's sshd took the connection: slow (a loaded
				// host, an sshd that re-executes itself per connection
				// under TCG) but not stalled.
				lastProgress = time.Now()
			}
			if answer == sshBanner {
				sshAt = time.Now()
				s.log.Debug("sshd answers", "vm", row.Name, "after", sshAt.Sub(start).Round(time.Millisecond))
			}
			if answer >= sshRefused && phase == PhaseBoot {
				phase = PhaseSSH
				progress.Report(ctx, api.Progress{Phase: phase, Message: "the guest's network is up; waiting for sshd at " + addr})
			}
		}
		if !sshAt.IsZero() && phase != PhaseAgent {
			phase = PhaseAgent
			progress.Report(ctx, api.Progress{Phase: phase, Message: "sshd answers; waiting for the guest agent"})
		}
		if !sshAt.IsZero() {
			if _, agentErr = s.pingAgent(ctx, st, 2*time.Second); agentErr == nil {
				return nil
			}
			if time.Since(sshAt) > s.cfg.AgentTimeout {
				return fmt.Errorf("it answers SSH but its guest agent (banger-vsock-pingd) did not answer within %s (%v): the image was probably built without it; rebuild the image (`banger image rm IMAGE && banger image build IMAGE --from SOURCE`) after `make runtime`", s.cfg.AgentTimeout, agentErr)
			}
		}
		if !drv.Alive(st) {
			return fmt.Errorf("the %s process exited during boot", drv.Name())
		}
		if sz := fileSize(st.ConsoleLog); sz != lastSize {
			lastSize, lastProgress = sz, time.Now()
		}
		if sshAt.IsZero() && time.Since(lastProgress) > s.cfg.StallTimeout {
			hint := ""
			if st.Accel == "kvm" {
				hint = kvmHint
			}
			return fmt.Errorf("the guest shows no progress on its console for %s (accel %s)%s", s.cfg.StallTimeout, st.Accel, hint)
		}
		if time.Now().After(deadline) {
			what := "no SSH answer at " + addr
			if !sshAt.IsZero() {
				what = fmt.Sprintf("SSH answers but the guest agent does not (%v)", agentErr)
			}
			return fmt.Errorf("%s within %s", what, s.cfg.BootTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("boot wait cancelled: %w", ctx.Err())
		case <-netUp:
			netUp = nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// probeSSH is sshProbe whose connection attempt is given up when netUp
// closes.
func (s *Service) probeSSH(ctx context.Context, addr string, netUp <-chan struct{}) sshAnswer {
	if netUp == nil {
		return sshProbe(ctx, addr)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-netUp:
			cancel()
		case <-pctx.Done():
		}
	}()
	return sshProbe(pctx, addr)
}

// chanClosed reports whether c is closed (false for nil).
func chanClosed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sshAnswer is what an SSH probe of a guest found, each more than the
// one before.
type sshAnswer int

const (
	sshSilent   sshAnswer = iota // no answer: the guest's network is not up
	sshRefused                   // refused: the network is up, sshd not yet
	sshAccepted                  // a connection was made, but no SSH banner came
	sshBanner                    // an SSH server sent its banner
)

// sshProbe connects to addr and waits for an SSH banner. The connect gives
// up after sshDialTimeout (nothing answers yet), the banner wait after
// sshBannerTimeout: a guest that accepted may be slow to answer, and
// closing before it does would make it start over.
func sshProbe(ctx context.Context, addr string) sshAnswer {
	d := net.Dialer{Timeout: sshDialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return sshRefused
	}
	if err != nil {
		return sshSilent
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sshBannerTimeout))
	buf := make([]byte, 8)
	n, _ := io.ReadAtLeast(c, buf, 4)
	if bytes.HasPrefix(buf[:n], []byte("SSH-")) {
		return sshBanner
	}
	return sshAccepted
}

// bootMessage is the boot phase's message: "kernel booting (qemu pid 42,
// tcg)".
func bootMessage(drv vmm.Driver, st vmm.State) string {
	how := fmt.Sprintf("%s pid %d", drv.Name(), st.PID)
	if st.Accel != "" {
		how += ", " + st.Accel
	}
	return "kernel booting (" + how + ")"
}

// stopMessage is the stop phase's message.
func stopMessage(drv vmm.Driver, force bool, timeout time.Duration) string {
	if force {
		return "killing " + drv.Name()
	}
	return fmt.Sprintf("asking the guest to power off (%s is killed after %s)", drv.Name(), timeout)
}

// The SSH probe's waits (see sshProbe).
const (
	sshDialTimeout   = 500 * time.Millisecond
	sshBannerTimeout = 10 * time.Second
)

// Stop stops a VM: gracefully (ACPI power-off, then kill after StopTimeout)
// unless force. Stopping a stopped VM succeeds.
func (s *Service) Stop(ctx context.Context, ref string, force bool) (api.VM, error) {
	row, unlock, err := s.getLocked(ctx, ref, api.StateStopping)
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	if err := s.stopLocked(ctx, &row, force); err != nil {
		return api.VM{}, fmt.Errorf("stop vm %q: %w", row.Name, err)
	}
	unlock()
	return s.view(row), nil
}

// stopLocked stops the VMM (if any), removes the TAP and records the VM as
// stopped. The caller holds the VM's lock and names the VM in the error.
func (s *Service) stopLocked(ctx context.Context, row *store.VM, force bool) error {
	st, ok, err := driverState(*row)
	if err != nil {
		return untouchable(row.Name, err)
	}
	s.unwatch(row.ID)
	s.closeForwards(row.ID)
	var errs []error
	if ok {
		s.dropAgentSession(st.AgentSocket)
		drv, known := s.drivers[row.VMM]
		if !known {
			return api.Errorf(api.ErrPrecondition, "it runs under %s, which this daemon cannot control", row.VMM)
		}
		if !force && s.isPaused(row.ID, st) {
			// A paused guest cannot see the power button: it runs again
			// first, and powers off as a running one does.
			if p, err := vmm.AsPauser(drv); err == nil {
				if err := p.Resume(ctx, st); err != nil {
					s.log.Warn("resume a paused vm to stop it", "vm", row.Name, "err", err)
				}
			}
		}
		progress.Report(ctx, api.Progress{Phase: PhaseStop, Message: stopMessage(drv, force, s.cfg.StopTimeout)})
		errs = append(errs, stopErr(drv.Stop(ctx, st, force, s.cfg.StopTimeout)))
		if drv.Alive(st) {
			// Still running: keep the record so the user can retry.
			s.watch(row.ID, st)
			return errors.Join(append(errs, errors.New("the VMM is still running"))...)
		}
	}
	errs = append(errs, s.deleteTAP(network.TAPName(row.ID)))
	row.DesiredState = store.DesiredStopped
	row.DriverState = ""
	row.StartedAt = time.Time{}
	errs = append(errs, store.UpdateVM(context.WithoutCancel(ctx), s.store.DB, row))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.log.Info("vm stopped", "vm", row.Name, "force", force)
	return nil
}

// stopErr labels an error of a driver's Stop.
func stopErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("stop vmm: %w", err)
}

// deleteTAP removes a VM's TAP device; the error names it.
func (s *Service) deleteTAP(tap string) error {
	if err := s.net.DeleteTAP(tap); err != nil {
		return fmt.Errorf("remove tap %s: %w", tap, err)
	}
	return nil
}

// Restart stops the VM (gracefully) and starts it again.
func (s *Service) Restart(ctx context.Context, ref string) (api.VM, error) {
	row, unlock, err := s.getLocked(ctx, ref, api.StateStopping)
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	if err := s.preflightStart(ctx, s.drivers[row.VMM]); err != nil {
		return api.VM{}, err
	}
	if err := s.stopLocked(ctx, &row, false); err != nil {
		return api.VM{}, fmt.Errorf("restart vm %q: stop: %w", row.Name, err)
	}
	if err := s.startLocked(ctx, &row); err != nil {
		return api.VM{}, fmt.Errorf("restart vm %q: start: %w", row.Name, err)
	}
	unlock()
	return s.view(row), nil
}

// Delete removes a VM: its VMM (only with force when running), TAP, lease,
// row and folder. The row goes before the folder: a daemon that dies in
// between leaves only a folder without a row, which the next start removes
// (see Recover); never a row whose disk is gone.
func (s *Service) Delete(ctx context.Context, ref string, force bool) error {
	row, unlock, err := s.getLocked(ctx, ref, api.StateStopping)
	defer unlock()
	if err != nil {
		return err
	}
	if _, _, err := driverState(row); err != nil {
		return untouchable(row.Name, err)
	}
	if f, _ := s.facts(row); f.ProcessAlive {
		if !force {
			return api.Errorf(api.ErrPrecondition, "VM %q is running: stop it first (`banger vm stop %s`) or use `banger vm rm --force %s`", row.Name, row.Name, row.Name)
		}
	}
	if err := s.stopLocked(ctx, &row, true); err != nil {
		return fmt.Errorf("delete vm %q: %w", row.Name, err)
	}
	progress.Report(ctx, api.Progress{Phase: PhaseRemove, Message: "deleting the disk and folder"})
	if err := store.DeleteVM(context.WithoutCancel(ctx), s.store.DB, row.ID); err != nil {
		return fmt.Errorf("delete vm %q: %w", row.Name, err)
	}
	s.forget(row.ID)
	s.dropRemovedImages(ctx)
	s.writeSSHConfig(ctx)
	s.log.Info("vm deleted", "vm", row.Name)
	if err := os.RemoveAll(s.cfg.Dirs.VMDir(row.ID)); err != nil {
		return fmt.Errorf("vm %q is deleted but its folder is not (the next daemon start removes it): %w", row.Name, err)
	}
	s.dropUnusedTemplates()
	return nil
}

// dropRemovedImages deletes the rows of force-removed images (tombstones)
// that no VM names any more; called after a VM row is deleted.
func (s *Service) dropRemovedImages(ctx context.Context) {
	if err := store.DeleteUnusedRemovedImages(context.WithoutCancel(ctx), s.store.DB); err != nil {
		s.log.Warn("delete rows of removed images", "err", err)
	}
}

// watch starts the monitor of a running VM: when its VMM exits without a
// stop request, the VM is recorded as stopped and its TAP removed.
// After Shutdown it does nothing.
func (s *Service) watch(id string, st vmm.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	o := s.opLocked(id)
	if o.monitor != nil {
		o.monitor()
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.monitor = cancel
	s.monitors.Go(func() { s.monitor(ctx, id, st) })
}

func (s *Service) unwatch(id string) {
	s.mu.Lock()
	if o := s.ops[id]; o != nil && o.monitor != nil {
		o.monitor()
		o.monitor = nil
	}
	s.mu.Unlock()
}

func (s *Service) monitor(ctx context.Context, id string, st vmm.State) {
	drv := s.drivers[st.Driver]
	if drv == nil {
		return
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	clock := &clockKeeper{s: s, id: id, st: st}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if drv.Alive(st) {
			clock.tick()
			continue
		}
		// Do not wait on the lock: a stop in progress holds it and cancels us.
		if s.currentOp(id) != "" {
			continue
		}
		s.reapDead(ctx, id, "the VMM process exited unexpectedly")
		return
	}
}

// reapDead records a VM whose VMM is gone as stopped and releases its TAP.
// It gives up when ctx ends (Shutdown) before it holds the VM's lock, and
// logs what it could not clean up.
func (s *Service) reapDead(ctx context.Context, id, why string) {
	unlock, err := s.lockCtx(ctx, id, "")
	defer unlock()
	if err != nil || ctx.Err() != nil {
		return
	}
	row, err := store.GetVM(context.Background(), s.store.DB, id)
	if err != nil {
		if !isNotFound(err) {
			s.log.Error("read dead vm", "id", id, "err", err)
		}
		return
	}
	st, ok, err := driverState(row)
	if err != nil || !ok || s.drivers[row.VMM] == nil || s.drivers[row.VMM].Alive(st) {
		return
	}
	// Let the driver remove its sockets and pid file.
	s.closeForwards(id)
	s.dropAgentSession(st.AgentSocket)
	if err := s.drivers[row.VMM].Stop(context.Background(), st, true, 0); err != nil {
		s.log.Warn("clean up after dead vmm", "vm", row.Name, "err", err)
	}
	if err := s.deleteTAP(network.TAPName(id)); err != nil {
		s.log.Warn("remove tap of dead vm", "vm", row.Name, "err", err)
	}
	row.DesiredState = store.DesiredStopped
	row.DriverState = ""
	row.StartedAt = time.Time{}
	row.LastError = why + " at " + time.Now().UTC().Format(time.RFC3339)
	if err := store.UpdateVM(context.Background(), s.store.DB, &row); err != nil {
		s.log.Error("record dead vm", "vm", row.Name, "err", err)
		return
	}
	s.log.Warn("vm stopped unexpectedly", "vm", row.Name, "why", why)
}

// Recover runs once at daemon start, before any request: it removes VMs
// whose creation was interrupted, re-adopts VMMs that survived the previous
// daemon, marks dead ones stopped (releasing their TAP), and removes VM
// folders without a row (left by a delete or create the daemon did not
// finish). It returns an error only when it cannot read the VMs; what it
// cannot clean up for one VM is logged and left for the next start.
func (s *Service) Recover(ctx context.Context) error {
	rows, err := store.ListVMs(ctx, s.store.DB)
	if err != nil {
		return err
	}
	running := map[string]bool{} // VMs whose VMM runs
	for _, row := range rows {
		if row.DesiredState == store.DesiredCreating {
			// The row goes; its folder is swept below like any folder
			// without a row.
			s.log.Warn("removing half-created vm", "vm", row.Name)
			if err := store.DeleteVM(ctx, s.store.DB, row.ID); err != nil {
				s.log.Error("remove half-created vm", "vm", row.Name, "err", err)
			}
			continue
		}
		st, ok, err := driverState(row)
		if err != nil {
			// Perhaps written by a newer daemon for a VM that runs: its
			// process, TAP and lease are left exactly as they are.
			s.log.Warn("leaving vm alone: its driver state is unreadable", "vm", row.Name, "err", err)
			running[row.ID] = true
			continue
		}
		if !ok {
			// Stopped: a VMM launched but not recorded is killed, and a
			// TAP left by a crash is released.
			s.endUnrecordedLaunch(ctx, row)
			if tap := network.TAPName(row.ID); s.net.TAPExists(tap) {
				if err := s.deleteTAP(tap); err != nil {
					s.log.Warn("release tap of stopped vm", "vm", row.Name, "err", err)
				}
			}
			continue
		}
		s.launchSettled(row.ID) // the row records the launch
		drv := s.drivers[row.VMM]
		if drv == nil {
			s.log.Warn("cannot adopt vm: driver unavailable", "vm", row.Name, "vmm", row.VMM)
			running[row.ID] = true
			continue
		}
		if err := drv.Recover(ctx, st); err != nil {
			if drv.Alive(st) {
				running[row.ID] = true
				// Alive but its control socket did not answer (busy, or
				// hung): keep watching it rather than leaking a live VMM.
				s.log.Warn("adopted vm whose vmm does not answer", "vm", row.Name, "err", err)
				s.adoptTAP(row)
				s.observePaused(ctx, row.ID, drv, st)
				s.watch(row.ID, st)
				s.openForwards(ctx, row)
				continue
			}
			s.log.Info("vm died while the daemon was down", "vm", row.Name, "err", err)
			s.reapDead(ctx, row.ID, "the VMM process exited while bangerd was not running")
			continue
		}
		running[row.ID] = true
		s.observePaused(ctx, row.ID, drv, st)
		s.log.Info("re-adopted running vm", "vm", row.Name, "pid", st.PID, "paused", s.isPaused(row.ID, st))
		s.adoptTAP(row)
		s.watch(row.ID, st)
		s.openForwards(ctx, row)
	}
	s.dropRemovedImages(ctx)
	s.writeSSHConfig(ctx)
	s.sweepTemplateBuilds(ctx)
	if err := s.sweepFolders(ctx); err != nil {
		s.log.Warn("remove vm folders without a vm", "err", err)
	}
	for name, drv := range s.drivers {
		if sw, ok := drv.(vmm.Sweeper); ok {
			if err := sw.Sweep(ctx, running); err != nil {
				s.log.Warn("remove what vmms that are gone left", "vmm", name, "err", err)
			}
		}
	}
	s.dropUnusedTemplates()
	return nil
}

// adoptTAP keeps the network guard of a re-adopted VM's TAP.
func (s *Service) adoptTAP(row store.VM) {
	if err := s.net.AdoptTAP(network.TAPName(row.ID), row.MAC, row.IP); err != nil {
		s.log.Warn("keep the network guard of an adopted vm", "vm", row.Name, "err", err)
	}
}

// sweepFolders removes the folders under the VMs directory that no VM row
// names. It runs at start, before any request, so no create is in flight.
func (s *Service) sweepFolders(ctx context.Context) error {
	rows, err := store.ListVMs(ctx, s.store.DB)
	if err != nil {
		return err
	}
	live := make(map[string]bool, len(rows))
	for _, r := range rows {
		live[r.ID] = true
	}
	return store.SweepFolders(s.cfg.Dirs.VMsDir(), live, func(p string) error {
		s.log.Warn("removing vm folder without a vm", "folder", p)
		return os.RemoveAll(p)
	})
}

// Shutdown stops the monitors and waits until they have returned, so none
// writes to the store afterwards; no monitor starts after it. It closes
// the agent sessions. VMs keep running.
func (s *Service) Shutdown() {
	s.mu.Lock()
	s.closed = true
	for _, o := range s.ops {
		if o.monitor != nil {
			o.monitor()
			o.monitor = nil
		}
	}
	links := s.links
	s.links = nil
	s.mu.Unlock()
	s.monitors.Wait()
	s.fwd.CloseAll()
	for _, l := range links {
		l.mu.Lock()
		if l.sess != nil {
			l.sess.Close()
		}
		l.mu.Unlock()
	}
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// consoleTail returns the last n lines written to path after offset from.
func consoleTail(path string, from int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(path)
	start := max(from, size-64<<10)
	buf := make([]byte, size-start)
	f.ReadAt(buf, start)
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(buf), "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
