package vm

import (
	"log/slog"
	"time"
)

// stepClock logs, at debug level, how long each step of one VM's create
// or start took (BANGER_DEBUG=1 shows them): where a clone's second goes.
type stepClock struct {
	log  *slog.Logger
	vm   string
	t0   time.Time
	last time.Time
}

func (s *Service) stepClock(vm string) *stepClock {
	now := time.Now()
	return &stepClock{log: s.log, vm: vm, t0: now, last: now}
}

// done logs the step name, begun when the previous one ended.
func (c *stepClock) done(name string) {
	now := time.Now()
	c.log.Debug("step", "vm", c.vm, "step", name, "took", now.Sub(c.last).Round(time.Microsecond),
		"since_start", now.Sub(c.t0).Round(time.Millisecond))
	c.last = now
}
