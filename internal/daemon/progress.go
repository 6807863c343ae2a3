package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
)

// progressInterval is the least time between two progress notifications of
// one call within one phase: about ten a second.
var progressInterval = 100 * time.Millisecond

// maxQueuedProgress bounds the reports waiting for a slow client: at most
// one per phase is queued, so this only matters when phases change faster
// than the client reads.
const maxQueuedProgress = 16

// progressRequested reads the "progress" extension member of a request
// (see api.ProgressRequest): absent or false is false, true is true, and
// anything else is an error for the client.
func progressRequested(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 {
		return false, nil
	}
	var on bool
	if err := json.Unmarshal(raw, &on); err != nil {
		return false, fmt.Errorf(`invalid request: "progress" must be true or false, not %s`, raw)
	}
	return on, nil
}

// lockedWriter serialises the writes of whole lines on a connection: the
// progress notifications and the final response.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// progressSink queues one call's progress reports and writes them as
// notifications from its own goroutine, so a handler never waits for the
// client. The server puts its report into the context of a call that asked
// for progress (progress.With), where handlers reach it with
// progress.Report: it never blocks and never fails; reports are coalesced
// to at most one every progressInterval per phase, and dropped once a write
// failed (the client went away; the call's context is cancelled then).
// Start it with newProgressSink and end it with close before the response
// is written.
type progressSink struct {
	out      io.Writer
	log      *slog.Logger
	interval time.Duration

	mu       sync.Mutex
	queue    []api.Progress // not yet written; at most one per run of a phase
	stopping bool

	wake chan struct{} // cap 1: "look at the queue again"
	done chan struct{} // closed when run returns
}

func newProgressSink(out io.Writer, log *slog.Logger) *progressSink {
	s := &progressSink{out: out, log: log, interval: progressInterval,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

// report queues p, replacing a queued report of the same phase: only the
// latest state of a phase is worth sending.
func (s *progressSink) report(p api.Progress) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	if n := len(s.queue); n > 0 && s.queue[n-1].Phase == p.Phase {
		s.queue[n-1] = p
	} else {
		s.queue = append(s.queue, p)
		if len(s.queue) > maxQueuedProgress {
			s.queue = append(s.queue[:0], s.queue[1:]...)
		}
	}
	s.mu.Unlock()
	s.poke()
}

func (s *progressSink) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close writes what is still queued (without waiting out the interval) and
// returns when the writer is done, so the response can follow. Reports
// after close are dropped.
func (s *progressSink) close() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.poke()
	<-s.done
}

// run writes queued reports. A report is written at once when its phase
// differs from the last one written, when a report of a later phase waits
// behind it, or when closing; otherwise not before interval has passed
// since the last write.
func (s *progressSink) run() {
	defer close(s.done)
	var (
		phase   string    // phase of the last notification written
		written time.Time // when; zero before the first
		failed  bool      // a write failed: drop everything
	)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.mu.Lock()
		var (
			p    api.Progress
			have = len(s.queue) > 0
			wait time.Duration
		)
		if have {
			p = s.queue[0]
			if !s.stopping && len(s.queue) == 1 && !written.IsZero() && p.Phase == phase {
				wait = s.interval - time.Since(written)
			}
			if wait <= 0 {
				s.queue = s.queue[1:]
			}
		}
		stopping := s.stopping
		s.mu.Unlock()

		if have && wait <= 0 {
			if !failed {
				if err := s.write(p); err != nil {
					failed = true
					s.log.Debug("progress notification not sent; dropping the rest", "err", err)
				}
			}
			phase, written = p.Phase, time.Now()
			continue
		}
		if !have && stopping {
			return
		}
		if have {
			timer.Reset(wait)
		}
		select {
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (s *progressSink) write(p api.Progress) error {
	params, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode progress: %w", err)
	}
	b, err := json.Marshal(api.Notification{JSONRPC: api.Version, Method: api.MethodProgress, Params: params})
	if err != nil {
		return fmt.Errorf("encode progress notification: %w", err)
	}
	if _, err := s.out.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write progress notification: %w", err)
	}
	return nil
}
