// Package agenttest runs a real guest agent server in the test process, on
// a socketpair, for tests of agent operations (exec, cp, ...) and of what
// carries their streams.
package agenttest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
)

// SocketPair returns the two ends of a Unix stream socketpair (net.Conns
// with deadlines and CloseWrite), closed when the test ends.
func SocketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// Session serves an agent server, with the handlers register adds, on one
// end of a socketpair and returns the host's session on the other; both
// end with the test.
func Session(t testing.TB, register func(*agent.Server)) *agent.Session {
	t.Helper()
	host, guest := SocketPair(t)
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
