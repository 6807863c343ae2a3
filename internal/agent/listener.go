package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxConns bounds the connections ServeListener serves at once; more are
// closed on arrival. The daemon needs one; the rest is slack for humans
// poking at the agent.
const maxConns = 16

// ServeListener accepts connections on ln and serves sessions on each (see
// Server), at most 16
// at a time (more are closed on arrival). It closes ln when ctx is done and returns, after every connection
// has finished, an error wrapping ctx.Err(). If Accept fails permanently
// (ln closed by someone else) it returns that error. The log gets one line per
// failed connection.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	log := s.log
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxConns)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("serve agent on %s: %w", ln.Addr(), cerr)
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("serve agent on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "retry_in", delay)
			sleepCtx(ctx, delay)
			continue
		}
		delay = 0
		select {
		case sem <- struct{}{}:
		default:
			log.Warn("too many connections; closing a new one", "remote", c.RemoteAddr().String(), "max", maxConns)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer c.Close()
			if err := s.serveChannel(ctx, c); err != nil && ctx.Err() == nil {
				log.Info("connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// sleepCtx sleeps for d or until ctx is done, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
