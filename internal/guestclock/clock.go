// Package guestclock keeps a guest's wall clock in step with the host's
// through the guest agent: the daemon measures the offset (the ping's
// clock, against the middle of its round trip) and, when it is off, asks
// the agent to correct it with Op: small offsets are slewed (the kernel
// runs the clock slightly faster or slower until they are gone, as
// adjtime does), large ones stepped at once, both relative to the clock's
// current value (adjtimex ADJ_SETOFFSET), so the request's transit time
// does not matter.
package guestclock

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
)

// Op is the agent operation.
const Op = "clock_adjust"

// Params are Op's parameters.
type Params struct {
	// OffsetNanos is added to the guest's wall clock (negative: it goes
	// back).
	OffsetNanos int64 `json:"offset_ns"`
	// Step applies it at once; otherwise it is slewed at the kernel's
	// adjtime rate (0.5 ms per second), for offsets below SlewMax.
	Step bool `json:"step,omitempty"`
}

// SlewMax is the largest offset slewed; larger ones are stepped.
const SlewMax = 200 * time.Millisecond

// Decide returns the correction for a measured offset (the guest ahead
// of the host by offset) with round trip rtt, and whether to correct at
// all: not when the offset is within what the measurement can tell
// (half the round trip) plus tolerance.
func Decide(offset, rtt, tolerance time.Duration) (Params, bool) {
	abs := offset
	if abs < 0 {
		abs = -abs
	}
	if abs <= rtt/2+tolerance {
		return Params{}, false
	}
	return Params{OffsetNanos: -offset.Nanoseconds(), Step: abs > SlewMax}, true
}

// Handler is the guest agent's handler for Op. It needs CAP_SYS_TIME.
func Handler(ctx context.Context, st *agent.Stream) error {
	var p Params
	if err := st.Decode(&p); err != nil {
		return err
	}
	if err := adjust(p); err != nil {
		return err
	}
	return st.Accept(nil)
}

// adjust applies p with adjtimex.
func adjust(p Params) error {
	off := time.Duration(p.OffsetNanos)
	if p.Step {
		sec := p.OffsetNanos / 1e9
		nsec := p.OffsetNanos % 1e9
		if nsec < 0 { // the kernel wants 0 <= tv_usec (ns with ADJ_NANO) < 1e9
			sec--
			nsec += 1e9
		}
		tx := unix.Timex{Modes: unix.ADJ_SETOFFSET | unix.ADJ_NANO, Time: unix.Timeval{Sec: sec, Usec: nsec}}
		if _, err := unix.Adjtimex(&tx); err != nil {
			return fmt.Errorf("step the clock by %v: %w", off, err)
		}
		return nil
	}
	if off > SlewMax || off < -SlewMax {
		return agent.Errorf(agent.CodeInvalid, "a slew of %v is more than %v: step it", off, SlewMax)
	}
	tx := unix.Timex{Modes: unix.ADJ_OFFSET_SINGLESHOT, Offset: off.Microseconds()}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("slew the clock by %v: %w", off, err)
	}
	return nil
}
