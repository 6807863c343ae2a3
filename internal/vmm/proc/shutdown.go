package proc

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"time"
)

// Shutdown describes how to stop a VMM process: ask the guest, then
// escalate to SIGTERM and SIGKILL.
type Shutdown struct {
	// Name is the VMM's name, for log lines ("qemu", "firecracker").
	Name string
	// Ask asks the guest to power off (ACPI power button, ctrl-alt-del);
	// nil skips the graceful step, as force does.
	Ask func(ctx context.Context) error
	// Timeout is how long to wait after Ask.
	Timeout time.Duration
	// AskAgain, when set, is how often Ask is repeated while waiting: a
	// guest that booted moments ago may not listen yet (under systemd the
	// ACPI power button is systemd-logind's, which starts late in a boot
	// that reaches SSH first). Zero asks once.
	AskAgain time.Duration
	// TermWait is how long to wait after SIGTERM (1 s with force).
	TermWait time.Duration
	// KillWait is how long to wait after SIGKILL.
	KillWait time.Duration
	// Log receives the steps taken; nil discards them.
	Log *slog.Logger
}

// Stop stops the process (pid, startTime): unless force, it calls s.Ask and
// waits up to s.Timeout for the process to exit; then it sends SIGTERM and
// waits up to s.TermWait; then SIGKILL, waiting up to s.KillWait whatever
// ctx says (a killed process goes away, and reporting success while it
// still runs would be wrong). Signals go through Signal, so a recycled pid
// is never hit. It returns nil once the process is gone.
func Stop(ctx context.Context, pid int, startTime uint64, force bool, s Shutdown) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("pid", pid)
	wait := func(ctx context.Context, dur time.Duration) bool {
		ctx, cancel := context.WithTimeout(ctx, dur)
		defer cancel()
		return WaitExit(ctx, pid, startTime, 0) == nil
	}
	if !force && s.Ask != nil {
		t0 := time.Now()
		deadline := t0.Add(s.Timeout)
		for asks := 0; ; asks++ {
			if err := s.Ask(ctx); err != nil && asks == 0 {
				log.Warn("graceful shutdown request failed", "err", err)
				break
			}
			step := time.Until(deadline)
			if s.AskAgain > 0 {
				step = min(step, s.AskAgain)
			}
			if wait(ctx, step) {
				log.Info(s.Name+" exited after the guest shut down", "took", time.Since(t0).Round(time.Millisecond), "asks", asks+1)
				return nil
			}
			if !time.Now().Before(deadline) || ctx.Err() != nil {
				log.Info("guest did not shut down in time; terminating "+s.Name, "timeout", s.Timeout, "asks", asks+1)
				break
			}
		}
	}
	grace := s.TermWait
	if force {
		grace = time.Second
	}
	if err := Signal(pid, startTime, syscall.SIGTERM); err != nil {
		return err
	}
	if wait(ctx, grace) {
		return nil
	}
	log.Warn(s.Name + " ignored SIGTERM; killing it")
	if err := Signal(pid, startTime, syscall.SIGKILL); err != nil {
		return err
	}
	if wait(context.Background(), s.KillWait) {
		return nil
	}
	return fmt.Errorf("still running %v after SIGKILL", s.KillWait)
}
