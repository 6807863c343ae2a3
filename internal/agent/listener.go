package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// maxConns bounds the connections ServeListener serves at once; more are
// closed on arrival. The daemon needs one; the rest is slack for humans
// poking at the agent.
const maxConns = 16

// connIdleTimeout closes a listener connection that sends nothing for this
// long, so forgotten connections cannot use up maxConns.
const connIdleTimeout = 10 * time.Minute

// ServeListener accepts connections on ln and runs Serve on each, at most 16
// at a time (more are closed on arrival); a connection idle for 10 minutes is
// closed. It closes ln when ctx is done and returns, after every connection
// has finished, an error wrapping ctx.Err(). If Accept fails permanently
// (ln closed by someone else) it returns that error. log gets one line per
// failed connection.
func ServeListener(ctx context.Context, ln net.Listener, info InfoFunc, log *slog.Logger) error {
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
			if err := serve(ctx, c, info, connIdleTimeout); err != nil && ctx.Err() == nil {
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
