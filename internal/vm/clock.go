package vm

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/guestclock"
	"github.com/bangerhq/banger/internal/vmm"
)

// Guest clocks are kept in step by the daemon (package guestclock): at
// every start once the agent answers, then every clockInterval while the
// VM runs, and at once when the host's clock jumped (the host slept:
// CLOCK_BOOTTIME ran on while CLOCK_MONOTONIC stood still). Offsets within
// clockTolerance (plus half the round trip) are left alone. A VM that
// resumes from a snapshot (a warm template's clone) has the snapshot's
// time: whatever resumes it should call syncClock once the agent answers,
// as startLocked does after a boot.
const (
	clockInterval  = 10 * time.Second
	clockTolerance = 5 * time.Millisecond
	// sleepJump is how far BOOTTIME must run ahead of MONOTONIC between
	// two looks for the host to count as having slept.
	sleepJump = time.Second
	// A clock is measured up to clockPings times, until a round trip
	// within clockGoodRTT, keeping the sample of the shortest: the
	// measurement is only as good as half the round trip, and the first
	// pings of a clone just restored under TCG take up to seconds (its
	// agent's code is translated anew), which left clones up to 2.9 s
	// behind, uncorrected because the offset was within half of it.
	clockPings   = 5
	clockGoodRTT = 20 * time.Millisecond
)

// clockSample is one measurement of a guest clock's offset.
type clockSample struct {
	offset, rtt time.Duration
	at          time.Time
}

// recordClock keeps the last offset measured for VM id (for vm show).
func (s *Service) recordClock(id string, offset, rtt time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clocks == nil {
		s.clocks = map[string]clockSample{}
	}
	s.clocks[id] = clockSample{offset: offset, rtt: rtt, at: time.Now()}
}

// lastClock is the last offset measured for VM id.
func (s *Service) lastClock(id string) (clockSample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clocks[id]
	return c, ok
}

// syncClock measures the guest clock of VM id (state st) and corrects it
// when it is off; after a step it measures again. It returns the offset
// measured last.
func (s *Service) syncClock(ctx context.Context, id string, st vmm.State) (time.Duration, error) {
	var off time.Duration
	for range 3 {
		var rtt time.Duration
		err := s.withSession(ctx, st, func(sess *agent.Session) error {
			rtt = -1
			for range clockPings {
				_, r, o, err := sess.Ping(ctx)
				if err != nil {
					return err
				}
				if rtt < 0 || r < rtt {
					rtt, off = r, o
				}
				if r <= clockGoodRTT {
					break
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		s.recordClock(id, off, rtt)
		p, ok := guestclock.Decide(off, rtt, clockTolerance)
		if !ok {
			return off, nil
		}
		err = s.withSession(ctx, st, func(sess *agent.Session) error {
			return sess.Call(ctx, guestclock.Op, p, nil)
		})
		if err != nil {
			return off, err
		}
		s.log.Debug("guest clock corrected", "vm_id", id, "offset", off, "rtt", rtt, "step", p.Step)
		if !p.Step {
			return off, nil // a slew takes its time
		}
	}
	return off, nil
}

// clockKeeper runs syncClock for one VM when it is due: every
// clockInterval, and at once after the host slept. Call tick from the VM's
// monitor; runs never overlap.
type clockKeeper struct {
	s       *Service
	id      string
	st      vmm.State
	running atomic.Bool
	last    time.Time     // last run started
	sleep   time.Duration // BOOTTIME - MONOTONIC at the last look
	warned  bool
}

func (k *clockKeeper) tick() {
	slept := false
	if d, ok := bootMinusMono(); ok {
		slept = k.sleep != 0 && d-k.sleep > sleepJump
		k.sleep = d
	}
	if !slept && time.Since(k.last) < clockInterval {
		return
	}
	// A paused guest's clock is put right when it resumes.
	if k.s.currentOp(k.id) != "" || k.s.isPaused(k.id, k.st) || !k.running.CompareAndSwap(false, true) {
		return
	}
	k.last = time.Now()
	go func() {
		defer k.running.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := k.s.syncClock(ctx, k.id, k.st); err != nil && !k.warned {
			// Once per VM run: an old agent, or a guest that does not
			// answer (vm ping tells which).
			k.warned = true
			k.s.log.Warn("cannot keep the guest clock in step", "vm_id", k.id, "err", err)
		}
	}()
}

// bootMinusMono is CLOCK_BOOTTIME - CLOCK_MONOTONIC: the time the host
// spent suspended since it booted.
func bootMinusMono() (time.Duration, bool) {
	var b, m unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &b) != nil || unix.ClockGettime(unix.CLOCK_MONOTONIC, &m) != nil {
		return 0, false
	}
	return time.Duration(b.Nano() - m.Nano()), true
}
