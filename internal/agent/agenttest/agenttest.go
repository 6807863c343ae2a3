// Package agenttest runs a real guest agent server in the test process, on
// a socketpair, for tests of agent operations (exec, cp, ...) and of what
// carries their streams.
package agenttest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/testhost"
)

// Session serves an agent server, with the handlers register adds, on one
// end of a socketpair and returns the host's session on the other; both
// end with the test.
func Session(t testing.TB, register func(*agent.Server)) *agent.Session {
	t.Helper()
	host, guest := testhost.SocketPair(t)
	log := slog.New(slog.DiscardHandler)
	srv := agent.NewServer(func() (agent.Info, error) { return agent.Info{AgentVersion: "test"}, nil }, log)
	register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.ServeConn(ctx, guest)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	sess, err := agent.Connect(cctx, host, log)
	if err != nil {
		t.Fatalf("connect to the test agent: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}
