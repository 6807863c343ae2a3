// Package progress carries the progress reports of a long operation in its
// context, from the code doing the work to whoever shows them.
//
// In bangerd the RPC server puts a reporter into each call's context that
// asked for progress (it sends api.MethodProgress notifications), and the
// services report their phases with Report. In the CLI and the TUI a caller
// puts its printer into the context of a client call: the client then asks
// the daemon for progress and hands each notification to it.
package progress

import (
	"context"

	"github.com/bangerhq/banger/internal/api"
)

// Reporter shows or forwards one report. It must not block for long: the
// daemon's side queues, the client's side runs on the calling goroutine.
type Reporter func(api.Progress)

type key struct{}

// With returns ctx carrying r; a nil r removes the reporter.
func With(ctx context.Context, r Reporter) context.Context {
	return context.WithValue(ctx, key{}, r)
}

// From returns the reporter ctx carries, nil when none.
func From(ctx context.Context) Reporter {
	r, _ := ctx.Value(key{}).(Reporter)
	return r
}

// Report hands p to the reporter ctx carries; without one it does nothing.
func Report(ctx context.Context, p api.Progress) {
	if r := From(ctx); r != nil {
		r(p)
	}
}
