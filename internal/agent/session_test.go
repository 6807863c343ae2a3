package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// fakeSerial stands in for a virtio-serial port between a guest agent and
// hosts that come and go. The guest's end persists; each host connection
// is relayed to it. Like the real port it has no connection boundaries:
// what the guest writes while no host is connected waits for the next
// host, and what a host wrote stays in flight when it leaves. Faults are
// injected on connect (garbage and replayed bytes in both directions) and
// on demand (garbage in the middle of a session).
type fakeSerial struct {
	t     *testing.T
	guest net.Conn // the agent's end
	port  net.Conn // the relay's end toward the agent

	mu       sync.Mutex
	host     net.Conn    // the relay's end toward the current host, nil when none
	hostMu   *sync.Mutex // held while writing to host; orders its prefix first
	stale    []byte      // guest output while no host was connected
	lastHost []byte      // the start of what the previous host sent, for replays
}

func newFakeSerial(t *testing.T) *fakeSerial {
	g, p := testhost.SocketPair(t)
	f := &fakeSerial{t: t, guest: g, port: p}
	go f.fromGuest()
	return f
}

// fromGuest moves the guest's output to the current host, or keeps it for
// the next one.
func (f *fakeSerial) fromGuest() {
	buf := make([]byte, 32<<10)
	for {
		n, err := f.port.Read(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		h, hmu := f.host, f.hostMu
		if h == nil && len(f.stale) < 1<<20 {
			f.stale = append(f.stale, buf[:n]...)
		}
		f.mu.Unlock()
		if h != nil {
			hmu.Lock()
			h.Write(buf[:n])
			hmu.Unlock()
		}
	}
}

// fault says what a new host connection meets.
type fault struct {
	garbageToGuest, garbageToHost bool
	replayToGuest                 bool // the previous host's first bytes again, to a whole frame
}

// connect returns a new host connection with the given faults.
func (f *fakeSerial) connect(fl fault) net.Conn {
	hostEnd, relay := testhost.SocketPair(f.t)
	// The new host meets its prefix (what the guest wrote while no host was
	// connected, then junk) before anything the guest writes from now on:
	// fromGuest waits on hmu until the prefix is written.
	hmu := new(sync.Mutex)
	hmu.Lock()
	f.mu.Lock()
	if f.host != nil {
		f.host.Close()
	}
	f.host, f.hostMu = relay, hmu
	stale := f.stale
	f.stale = nil
	replay := wholeFrames(f.lastHost)
	f.lastHost = nil
	f.mu.Unlock()
	junk := garbage(700)
	go func() {
		defer hmu.Unlock()
		var pre []byte
		pre = append(pre, stale...)
		if fl.garbageToHost {
			pre = append(pre, junk...)
		}
		relay.Write(pre)
	}()
	var toGuest []byte
	if fl.garbageToGuest {
		toGuest = append(toGuest, junk...)
		toGuest = append(toGuest, "BANGER-SYNC 1 stale-nonce-from-before\n"...)
	}
	if fl.replayToGuest {
		toGuest = append(toGuest, replay...)
	}
	f.port.Write(toGuest)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := relay.Read(buf)
			if err != nil {
				f.mu.Lock()
				if f.host == relay {
					f.host = nil
				}
				f.mu.Unlock()
				return
			}
			f.mu.Lock()
			if len(f.lastHost) < 4096 {
				f.lastHost = append(f.lastHost, buf[:n]...)
			}
			f.mu.Unlock()
			f.port.Write(buf[:n])
		}
	}()
	return hostEnd
}

// garble writes random bytes to the guest as if from the host.
func (f *fakeSerial) garble() {
	f.port.Write(garbage(100))
}

// garbage returns n random bytes that a multiplexer rejects at once: the
// first is not yamux's version (0). Random bytes that happen to start
// with a valid header could name a frame of up to 4 GiB, which would
// swallow the next host's sync until a keepalive timed out.
func garbage(n int) []byte {
	junk := make([]byte, n)
	rand.Read(junk)
	junk[0] |= 0x80
	return junk
}

// wholeFrames returns the start of b, a host's output (sync lines, then
// its multiplexer's frames), that ends with a whole frame. The port
// delivers what a host wrote in order and entirely, and a guest reads end
// of file when a host leaves mid-write; a replay cut inside a frame would
// instead leave a guest that took the replayed sync inside a frame that
// never ends, swallowing the next host's sync attempts as its body.
func wholeFrames(b []byte) []byte {
	i := bytes.LastIndex(b, []byte(syncPrefix))
	if i < 0 {
		return nil
	}
	nl := bytes.IndexByte(b[i:], '\n')
	if nl < 0 {
		return b[:i]
	}
	end := i + nl + 1
	const header = 12 // yamux: version, type, flags (2), stream id (4), length (4)
	for len(b)-end >= header {
		size := header
		if b[end+1] == 0 { // a data frame: its body follows
			size += int(binary.BigEndian.Uint32(b[end+8 : end+header]))
		}
		if len(b)-end < size {
			break
		}
		end += size
	}
	return b[:end]
}

// echoServer is a server with an "echo" op (bytes back until EOF) and a
// "fail" op (refused with CodeNotFound), logging to log.
func echoServer(log *slog.Logger) *Server {
	s := NewServer(fixedInfo, log)
	s.Handle("echo", func(ctx context.Context, st *Stream) error {
		var p struct{ Greeting string }
		if err := st.Decode(&p); err != nil {
			return err
		}
		if err := st.Accept(map[string]string{"greeting": p.Greeting}); err != nil {
			return err
		}
		_, err := io.Copy(st, st)
		return err
	})
	s.Handle("fail", func(ctx context.Context, st *Stream) error {
		return Errorf(CodeNotFound, "no such thing")
	})
	return s
}

// sessionEnds passes log records on to the test's log and signals ended
// (without blocking, it has room for one) when the guest's session ends.
type sessionEnds struct {
	slog.Handler
	ended chan struct{}
}

func newSessionEnds(t *testing.T) *sessionEnds {
	return &sessionEnds{Handler: testLog(t).Handler(), ended: make(chan struct{}, 1)}
}

func (h *sessionEnds) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "session ended") {
		select {
		case h.ended <- struct{}{}:
		default:
		}
	}
	return h.Handler.Handle(ctx, r)
}

// runGuest serves sessions on the guest's end of f as the serial loop
// does, until stop is called (an agent that exits).
func runGuest(t *testing.T, s *Server, ch deadlineConn) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := s.serveChannel(ctx, ch); err != nil && ctx.Err() == nil {
				t.Logf("guest: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("guest did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// useSession checks a session end to end: a ping, an echo of 300 KiB of
// random bytes on two streams at once, a refused stream.
func useSession(t *testing.T, sess *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, _, off, err := sess.Ping(ctx)
	if err != nil || info.BootID != testInfo.BootID {
		t.Fatalf("ping: %+v %v", info, err)
	}
	if off > time.Second || off < -time.Second {
		t.Fatalf("offset against the host's own clock: %v", off)
	}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			var res struct{ Greeting string }
			c, err := sess.Open(ctx, "echo", map[string]string{"greeting": fmt.Sprint("hi", i)}, &res)
			if err != nil {
				t.Errorf("open echo: %v", err)
				return
			}
			defer c.Close()
			if res.Greeting != fmt.Sprint("hi", i) {
				t.Errorf("result %+v", res)
			}
			data := make([]byte, 300<<10)
			rand.Read(data)
			go func() {
				c.Write(data)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("echo: %d bytes back of %d, equal %v, err %v", len(got), len(data), bytes.Equal(got, data), err)
			}
		})
	}
	wg.Wait()
	err = sess.Call(ctx, "fail", nil, nil)
	if !errors.Is(err, ErrNotFoundCode) || err.Error() != "no such thing" {
		t.Fatalf("fail op: %v", err)
	}
	err = sess.Call(ctx, "nope", nil, nil)
	if !errors.Is(err, ErrUnknownOpCode) {
		t.Fatalf("unknown op: %v", err)
	}
	err = sess.Call(ctx, "echo", map[string]int{"bogus": 1}, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeInvalid {
		t.Fatalf("bad params: %v", err)
	}
}

func connectHost(t *testing.T, c net.Conn) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	sess, err := Connect(ctx, c, testLog(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Logf("sync took %v", time.Since(start).Round(time.Millisecond))
	return sess
}

// TestSessionRecovers runs sessions through host departures (clean and
// abrupt), garbage and replayed bytes in both directions, garbage in the
// middle of a session and agent restarts: every time the next session
// syncs and works.
func TestSessionRecovers(t *testing.T) {
	f := newFakeSerial(t)
	guestLog := newSessionEnds(t)
	srv := echoServer(slog.New(guestLog))
	stopGuest := runGuest(t, srv, f.guest)

	faults := []fault{
		{},
		{garbageToGuest: true},
		{garbageToHost: true},
		{replayToGuest: true},
		{garbageToGuest: true, garbageToHost: true, replayToGuest: true},
	}
	for i := range 15 {
		fl := faults[i%len(faults)]
		sess := connectHost(t, f.connect(fl))
		useSession(t, sess)
		switch i % 3 {
		case 0: // the daemon closes the session
			sess.Close()
		case 1: // the daemon is SIGKILLed: its connection just goes
			f.mu.Lock()
			f.host.Close()
			f.mu.Unlock()
		case 2: // the agent restarts under a live session
			stopGuest()
			stopGuest = runGuest(t, srv, f.guest)
			sessionEndsOnNextRequest(t, sess, fmt.Sprintf("round %d: the agent's restart", i))
		}
	}

	// Garbage in the middle of a live session ends it on both sides; the
	// next sync works. The request is sent once the guest has dropped its
	// session: one sent earlier can reach the guest's multiplexer with the
	// garbage, in one read, and go with it (the host then learns only from
	// its keepalive).
	sess := connectHost(t, f.connect(fault{}))
	useSession(t, sess)
	select {
	case <-guestLog.ended: // an earlier session's end, before this one began
	default:
	}
	f.garble()
	select {
	case <-guestLog.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the guest's session did not end on garbage")
	}
	sessionEndsOnNextRequest(t, sess, "garbage in the session")
	useSession(t, connectHost(t, f.connect(fault{})))
}

// sessionEndsOnNextRequest checks that a session whose agent side is gone
// (restarted, or back to scanning after garbage) fails its next request
// and ends at once: the scanning agent answers it with BANGER-NOSESSION,
// well before any keepalive could tell.
func sessionEndsOnNextRequest(t *testing.T, sess *Session, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := sess.Call(ctx, OpPing, nil, nil); err == nil {
		t.Fatalf("%s: a request on the old session succeeded", what)
	}
	select {
	case <-sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the host's session did not end", what)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("%s: the session took %v to end", what, took)
	}
}

// TestConnectLegacyAgent: an agent that speaks only the line protocol is
// recognised by its ping answer, not waited for until the deadline.
func TestConnectLegacyAgent(t *testing.T) {
	host, guest := testhost.SocketPair(t)
	startServe(t, guest, fixedInfo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Connect(ctx, host, testLog(t))
	var le *LegacyAgentError
	if !errors.As(err, &le) || !errors.Is(err, ErrLegacyAgent) || le.Reply.AgentVersion != "test" {
		t.Fatalf("connect to a legacy agent: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("legacy agent recognised after %v", took)
	}
}

// TestConnectNoAgent: nothing answers; Connect ends with ctx.
func TestConnectNoAgent(t *testing.T) {
	host, _ := testhost.SocketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, host, testLog(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect to nothing: %v", err)
	}
}

// TestSessionEnd: after Session.End the agent waits for a sync again, as
// at its start: a line-protocol ping on the next connection is answered
// (a running session would take it for garbage and drop it), and the next
// sync is answered at its first attempt.
func TestSessionEnd(t *testing.T) {
	f := newFakeSerial(t)
	runGuest(t, echoServer(testLog(t)), f.guest)
	sess := connectHost(t, f.connect(fault{}))
	for i := range 3 {
		useSession(t, sess)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sess.End(ctx); err != nil {
			cancel()
			t.Fatalf("round %d: end: %v", i, err)
		}
		cancel()
		if sess.Alive() {
			t.Fatalf("round %d: the session is alive after End", i)
		}
		// One ping, no second chance: the agent must be scanning.
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, _, err := Ping(pctx, f.connect(fault{}))
		pcancel()
		if err != nil || r.BootID != testInfo.BootID {
			t.Fatalf("round %d: line-protocol ping after End: %+v %v", i, r, err)
		}
		start := time.Now()
		sess = connectHost(t, f.connect(fault{}))
		if took := time.Since(start); took >= syncAttempt {
			t.Errorf("round %d: the sync after End took %v: its first attempt was lost", i, took)
		}
	}
	useSession(t, sess)
}
