// Command agentrtt measures the guest agent's round trip on one VM's agent
// socket, for bench/run.sh's ping part: the raw line-protocol ping (one
// JSON line each way on the virtio-serial port, what the bench's
// wait_agent sends) against the session ping bangerd makes (a yamux
// stream: open, request, answer, close), side by side on one connection,
// in alternating rounds. It also counts the channel writes and reads a
// session ping costs on the host side.
//
// Usage: agentrtt [-n 100] [-rounds 5] [-gap 0] SOCKET, where SOCKET is the VM's
// agent socket (`banger vm show --json NAME`, agent_socket). QEMU serves one
// client at a time, so nothing else (bangerd) may hold the socket:
// stop the daemon first (its VMs keep running).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/bangerhq/banger/internal/agent"
)

func main() {
	log.SetFlags(0)
	n := flag.Int("n", 100, "pings of each kind")
	rounds := flag.Int("rounds", 5, "alternating rounds the pings are split into")
	gap := flag.Duration("gap", 0, "pause before each ping (an idle guest between pings, as between `banger vm ping` runs)")
	flag.Parse()
	if flag.NArg() != 1 || *n < *rounds || *rounds < 1 {
		log.Fatal("usage: agentrtt [-n 100] [-rounds 5] [-gap 0] SOCKET")
	}
	sock := flag.Arg(0)
	per := *n / *rounds
	var raw, sess []time.Duration
	var frames counts
	for r := range *rounds {
		// The side that goes first alternates.
		if r%2 == 0 {
			raw = append(raw, rawPings(sock, per, *gap)...)
			sess = append(sess, sessionPings(sock, per, *gap, &frames)...)
		} else {
			sess = append(sess, sessionPings(sock, per, *gap, &frames)...)
			raw = append(raw, rawPings(sock, per, *gap)...)
		}
	}
	fmt.Printf("raw line ping: %s over %d\n", summary(raw), len(raw))
	fmt.Printf("session ping:  %s over %d\n", summary(sess), len(sess))
	fmt.Printf("session ping on the host's channel: %.1f writes (%.0f bytes), %.1f reads (%.0f bytes) per ping\n",
		per1(frames.writes.Load(), len(sess)), per1(frames.wbytes.Load(), len(sess)),
		per1(frames.reads.Load(), len(sess)), per1(frames.rbytes.Load(), len(sess)))
	fmt.Printf("ratio session/raw (medians): %.2f\n", quantile(sess, 0.5)/quantile(raw, 0.5))
}

func per1(v int64, n int) float64 { return float64(v) / float64(n) }

// dial connects to the agent socket. The first ping of each round is a
// warm-up, not counted: a connection that just closed leaves the guest a
// moment (its 200 ms retry) before it reads again.
func dial(sock string) net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		log.Fatalf("dial %s: %v", sock, err)
	}
	return c
}

// rawPings sends n line-protocol pings, gap apart, on a new connection.
func rawPings(sock string, n int, gap time.Duration) []time.Duration {
	c := dial(sock)
	defer c.Close()
	// The first pings may go to a guest still in the session the last
	// connection left (it ends that session on the garbage and scans
	// again): retried until one is answered, not counted.
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, err := agent.Ping(ctx, c)
		cancel()
		if err == nil {
			break
		}
		if try == 20 {
			log.Fatalf("raw ping: %v", err)
		}
	}
	var out []time.Duration
	for range n {
		time.Sleep(gap)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, rtt, err := agent.Ping(ctx, c)
		cancel()
		if err != nil {
			log.Fatalf("raw ping: %v", err)
		}
		out = append(out, rtt)
	}
	return out
}

// sessionPings starts a session on a new connection and pings over it n
// times, gap apart, counting the channel's use in frames.
func sessionPings(sock string, n int, gap time.Duration, frames *counts) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc := &countingConn{Conn: dial(sock)}
	s, err := agent.Connect(ctx, cc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		log.Fatalf("session: %v", err)
	}
	defer s.Close()
	var out []time.Duration
	for i := range n + 1 {
		if i == 1 {
			cc.counting.Store(frames)
		}
		if i > 0 {
			time.Sleep(gap)
		}
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, rtt, _, err := s.Ping(pctx)
		cancel()
		if err != nil {
			log.Fatalf("session ping: %v", err)
		}
		if i > 0 {
			out = append(out, rtt)
		}
	}
	// The last stream's close frames may still be on their way: let them
	// arrive, so each ping counts its whole exchange.
	time.Sleep(100 * time.Millisecond)
	cc.counting.Store(nil)
	return out
}

// counts are a channel's writes and reads.
type counts struct{ writes, wbytes, reads, rbytes atomic.Int64 }

// countingConn counts the writes and reads on a connection while counting
// is set.
type countingConn struct {
	net.Conn
	counting atomic.Pointer[counts]
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if k := c.counting.Load(); k != nil {
		k.writes.Add(1)
		k.wbytes.Add(int64(n))
	}
	return n, err
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if k := c.counting.Load(); k != nil && n > 0 {
		k.reads.Add(1)
		k.rbytes.Add(int64(n))
	}
	return n, err
}

// quantile is the p-quantile of d in milliseconds (nearest rank).
func quantile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1)+0.5)].Microseconds()) / 1000
}

func summary(d []time.Duration) string {
	return fmt.Sprintf("median %.2f ms (p10 %.2f, p90 %.2f, min %.2f)", quantile(d, 0.5), quantile(d, 0.1), quantile(d, 0.9), quantile(d, 0))
}
