package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

var testInfo = Info{Hostname: "dev", UptimeSeconds: 12.5, BootID: "0b6a3e2c-boot", AgentVersion: "test"}

func fixedInfo() (Info, error) { return testInfo, nil }

// startServe runs Serve on c until the test ends and returns its result.
func startServe(t testing.TB, c net.Conn, info InfoFunc) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, c, info) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return errc
}

func TestPingOverSocketpair(t *testing.T) {
	host, guest := testhost.SocketPair(t)
	startServe(t, guest, fixedInfo)

	for i := range 3 { // the same connection serves several pings
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, rtt, err := Ping(ctx, host)
		cancel()
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if !r.OK || r.Hostname != "dev" || r.UptimeSeconds != 12.5 || r.BootID != "0b6a3e2c-boot" || r.AgentVersion != "test" {
			t.Fatalf("ping %d: reply %+v", i, r)
		}
		if len(r.ID) != 32 {
			t.Errorf("id %q: want 32 hex digits", r.ID)
		}
		// Zero is possible: TCG guests can have a 4 ms clock.
		if rtt < 0 || rtt > 5*time.Second {
			t.Errorf("rtt %v", rtt)
		}
	}
}

// TestPingIDsDiffer: every ping carries a fresh nonce.
func TestPingIDsDiffer(t *testing.T) {
	host, guest := testhost.SocketPair(t)
	startServe(t, guest, fixedInfo)
	seen := map[string]bool{}
	for range 20 {
		r, _, err := Ping(context.Background(), host)
		if err != nil {
			t.Fatal(err)
		}
		if seen[r.ID] {
			t.Fatalf("id %q reused", r.ID)
		}
		seen[r.ID] = true
	}
}

// fakeGuest reads the request on c and writes before, then the reply to the
// request's id with the given id transformation, all as one stream.
func fakeGuest(t *testing.T, c net.Conn, before string, reply func(id string) string) {
	t.Helper()
	go func() {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			var req Request
			if err := json.Unmarshal([]byte(line), &req); err != nil {
				t.Errorf("fake guest: bad request %q: %v", line, err)
				return
			}
			io.WriteString(c, before+reply(req.ID))
			return
		}
	}()
}

func TestPingDiscardsStaleAndGarbage(t *testing.T) {
	stale := `{"id":"0123","ok":true,"hostname":"old"}` + "\n" +
		"garbage \x00\xff not json\n" +
		strings.Repeat("x", 3*MaxLineBytes) + `{"id":"` + "\n" + // over-long line
		"\n\r\n" +
		`{"id":"feed","ok":false,"error":"unknown op"}` + "\n" +
		`{"ok":true}` + "\n"

	t.Run("stale lines already queued", func(t *testing.T) {
		host, guest := testhost.SocketPair(t)
		// Written before the ping is sent, like replies a previous
		// session left in a virtio-serial port.
		if _, err := io.WriteString(guest, stale+`{"id":"partial line from an old sess`); err != nil {
			t.Fatal(err)
		}
		fakeGuest(t, guest, "\n", func(id string) string {
			return `{"id":"` + id + `","ok":true,"hostname":"new"}` + "\n"
		})
		r, _, err := Ping(context.Background(), host)
		if err != nil {
			t.Fatal(err)
		}
		if r.Hostname != "new" {
			t.Fatalf("got %+v, want the reply with our id", r)
		}
	})
	t.Run("stale lines sent before the reply", func(t *testing.T) {
		host, guest := testhost.SocketPair(t)
		fakeGuest(t, guest, stale, func(id string) string {
			return `{"id":"` + id + `x","ok":true,"hostname":"near miss"}` + "\n" +
				`{"id":"` + id + `","ok":true,"hostname":"new"}` + "\n"
		})
		r, _, err := Ping(context.Background(), host)
		if err != nil {
			t.Fatal(err)
		}
		if r.Hostname != "new" {
			t.Fatalf("got %+v, want the reply with our id", r)
		}
	})
}

func TestPingNotOK(t *testing.T) {
	host, guest := testhost.SocketPair(t)
	startServe(t, guest, func() (Info, error) { return Info{}, errors.New("read boot id: no such file") })
	r, _, err := Ping(context.Background(), host)
	if !errors.Is(err, ErrNotOK) {
		t.Fatalf("err = %v, want ErrNotOK", err)
	}
	if r.OK || !strings.Contains(r.Error, "boot id") || !strings.Contains(err.Error(), "boot id") {
		t.Fatalf("reply %+v, err %v", r, err)
	}
}

func TestPingTimeout(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		host, _ := testhost.SocketPair(t) // the guest never answers
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := Ping(ctx, host)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
			t.Fatalf("took %v for a 200ms deadline", d)
		}
		// Ping clears the deadline it set: the connection is usable.
		if err := host.SetDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		host, _ := testhost.SocketPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, _, err := Ping(ctx, host)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want Canceled", err)
		}
	})
	t.Run("answers only garbage", func(t *testing.T) {
		host, guest := testhost.SocketPair(t)
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a flood of lines that never match
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := io.WriteString(guest, `{"id":"nope","ok":true}`+"\n"); err != nil {
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, _, err := Ping(ctx, host); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		host, guest := testhost.SocketPair(t)
		fakeGuest(t, guest, "", func(string) string { guest.Close(); return "" })
		if _, _, err := Ping(context.Background(), host); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v, want ErrUnexpectedEOF", err)
		}
	})
}

// exchange writes in to a served connection and returns the reply lines that
// come back before the closing ping's reply.
func exchange(t *testing.T, in string) []Reply {
	t.Helper()
	host, guest := testhost.SocketPair(t)
	errc := startServe(t, guest, fixedInfo)
	go io.WriteString(host, in+"\n"+`{"op":"ping","id":"last"}`+"\n")
	br := bufio.NewReader(host)
	var got []Reply
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read replies: %v", err)
		}
		var r Reply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("agent sent a non-JSON line %q", line)
		}
		if r.ID == "last" {
			if !r.OK {
				t.Fatalf("final ping failed: %+v", r)
			}
			select {
			case err := <-errc:
				t.Fatalf("Serve returned %v", err)
			default:
			}
			return got
		}
		got = append(got, r)
	}
}

func TestServeSurvivesGarbage(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []Reply
	}{
		{"empty lines", "\n\n\r\n   \n", nil},
		{"not json", "hello\n{{{\n\x00\x01\xff\xfe\n", nil},
		{"json but not an object", `null` + "\n" + `[1,2]` + "\n" + `"ping"` + "\n" + `42` + "\n", nil},
		{"wrong field types", `{"op":"ping","id":7}` + "\n" + `{"op":1}` + "\n", nil},
		{"over-long line", strings.Repeat("a", MaxLineBytes) + "\n" + strings.Repeat(`{"op":"ping","id":"x"}`, 1000) + "\n", nil},
		{"longest allowed line", `{"op":"ping","id":"` + strings.Repeat("i", MaxLineBytes-len(`{"op":"ping","id":""}`)-1) + `"}`,
			[]Reply{{ID: strings.Repeat("i", MaxLineBytes-len(`{"op":"ping","id":""}`)-1), OK: true}}},
		{"unknown op", `{"op":"exec","id":"a","cmd":"rm -rf /"}` + "\n" + `{"id":"b"}` + "\n",
			[]Reply{{ID: "a", Error: ErrUnknownOp}, {ID: "b", Error: ErrUnknownOp}}},
		{"crlf and spaces", ` {"op":"ping","id":"c"} ` + "\r\n", []Reply{{ID: "c", OK: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exchange(t, tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d replies %+v, want %+v", len(got), got, tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.ID != w.ID || g.OK != w.OK || g.Error != w.Error {
					t.Errorf("reply %d: got %+v, want %+v", i, g, w)
				}
				if g.OK && g.Hostname != testInfo.Hostname {
					t.Errorf("reply %d: hostname %q", i, g.Hostname)
				}
				if !g.OK && (g.Hostname != "" || g.BootID != "") {
					t.Errorf("reply %d: error reply carries info: %+v", i, g)
				}
			}
		})
	}
}

func TestServeReturns(t *testing.T) {
	t.Run("EOF", func(t *testing.T) {
		host, guest := testhost.SocketPair(t)
		errc := make(chan error, 1)
		go func() { errc <- Serve(context.Background(), guest, fixedInfo) }()
		io.WriteString(host, `{"op":"ping","id":"half`) // a partial line is dropped
		host.(*net.UnixConn).CloseWrite()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Serve at EOF = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return at EOF")
		}
	})
	t.Run("cancel while reading", func(t *testing.T) {
		_, guest := testhost.SocketPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- Serve(ctx, guest, fixedInfo) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Serve = %v, want Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return on cancel")
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		_, guest := testhost.SocketPair(t)
		err := serve(context.Background(), guest, fixedInfo, 100*time.Millisecond)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("serve = %v, want ErrDeadlineExceeded", err)
		}
	})
}

// TestServeWriteTimeout: a client that sends requests and never reads its
// replies cannot wedge the agent forever.
func TestServeWriteTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("takes replyWriteTimeout")
	}
	host, guest := testhost.SocketPair(t)
	errc := make(chan error, 1)
	go func() { errc <- Serve(context.Background(), guest, fixedInfo) }()
	go func() {
		req := []byte(`{"op":"ping","id":"` + strings.Repeat("z", 3000) + `"}` + "\n")
		for {
			if _, err := host.Write(req); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Serve = %v, want a write deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve blocked on a client that does not read")
	}
}
