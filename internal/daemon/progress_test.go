package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/progress"
)

// withProgressInterval sets progressInterval for one test.
func withProgressInterval(t *testing.T, d time.Duration) {
	old := progressInterval
	progressInterval = d
	t.Cleanup(func() { progressInterval = old })
}

// progressConn sends a raw request and reads the daemon's lines.
type progressConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialProgress(t *testing.T, sock, request string) *progressConn {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(request + "\n")); err != nil {
		t.Fatal(err)
	}
	return &progressConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// next reads one line within wait; it returns nil on timeout.
func (c *progressConn) next(wait time.Duration) map[string]json.RawMessage {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	line, err := c.r.ReadBytes('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && len(line) == 0 {
		return nil
	}
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		c.t.Fatalf("bad line %q: %v", line, err)
	}
	return m
}

// progress reads one line within wait and requires a progress notification.
func (c *progressConn) progress(wait time.Duration) api.Progress {
	c.t.Helper()
	m := c.next(wait)
	if m == nil {
		c.t.Fatal("no progress notification in time")
	}
	if _, hasID := m["id"]; hasID || string(m["method"]) != `"progress"` || string(m["jsonrpc"]) != `"2.0"` {
		c.t.Fatalf("not a progress notification: %v", m)
	}
	var p api.Progress
	if err := json.Unmarshal(m["params"], &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func TestProgressPhaseChangeIsImmediateAndBytesAreCoalesced(t *testing.T) {
	// An interval far longer than the test: anything written before the
	// call ends is written because of a phase change.
	withProgressInterval(t, time.Hour)
	step, release := make(chan struct{}), make(chan struct{})
	m := &Methods{}
	m.Register("test.progress", Typed(func(ctx context.Context, _ empty) (echoParams, error) {
		progress.Report(ctx, api.Progress{Phase: "pull", Layer: 1, Layers: 1, Total: 100})
		progress.Report(ctx, api.Progress{Phase: "pull", Layer: 1, Layers: 1, Done: 100, Total: 100})
		progress.Report(ctx, api.Progress{Phase: "mkfs", Message: "writing ext4"})
		<-step
		for i := int64(1); i <= 50; i++ {
			progress.Report(ctx, api.Progress{Phase: "mkfs", Message: "writing ext4", Done: i})
		}
		<-release
		return echoParams{Text: "built"}, nil
	}))
	sock := startTestServer(t, m)
	c := dialProgress(t, sock, `{"jsonrpc":"2.0","id":7,"method":"test.progress","progress":true}`)

	// The first report may be replaced by the second before it is written;
	// the last report of a phase is written when the next phase starts.
	var got []api.Progress
	for len(got) < 3 && (len(got) == 0 || got[len(got)-1].Phase != "mkfs") {
		got = append(got, c.progress(5*time.Second))
	}
	want := []api.Progress{
		{Phase: "pull", Layer: 1, Layers: 1, Total: 100},
		{Phase: "pull", Layer: 1, Layers: 1, Done: 100, Total: 100},
		{Phase: "mkfs", Message: "writing ext4"},
	}
	if !slices.Equal(got, want) && !slices.Equal(got, want[1:]) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	close(step)
	if m := c.next(200 * time.Millisecond); m != nil {
		t.Fatalf("byte updates within the interval were written: %v", m)
	}
	close(release)
	// Ending the call writes the latest report, then the response.
	if got, w := c.progress(5*time.Second), (api.Progress{Phase: "mkfs", Message: "writing ext4", Done: 50}); got != w {
		t.Fatalf("got %+v, want %+v", got, w)
	}
	resp := c.next(5 * time.Second)
	if string(resp["id"]) != "7" || string(resp["result"]) != `{"text":"built"}` {
		t.Fatalf("response: %v", resp)
	}
}

func TestProgressRateLimitThroughClient(t *testing.T) {
	withProgressInterval(t, 20*time.Millisecond)
	took := make(chan time.Duration, 1)
	m := &Methods{}
	m.Register("test.progress", Typed(func(ctx context.Context, _ empty) (echoParams, error) {
		start := time.Now()
		for i := int64(1); i <= 2000; i++ {
			progress.Report(ctx, api.Progress{Phase: "pull", Layer: 1, Layers: 2, Done: i, Total: 2000})
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		progress.Report(ctx, api.Progress{Phase: "pull", Layer: 2, Layers: 2, Done: 5, Total: 5})
		took <- time.Since(start)
		progress.Report(ctx, api.Progress{Phase: "customize", Message: "installing with apt: openssh-server"})
		return echoParams{Text: "ok"}, nil
	}))
	sock := startTestServer(t, m)
	var got []api.Progress
	var out echoParams
	err := client.New(sock).CallProgress(context.Background(), "test.progress", nil, &out, func(p api.Progress) { got = append(got, p) })
	if err != nil || out.Text != "ok" {
		t.Fatalf("call: %+v, %v", out, err)
	}
	d := <-took
	var pulls int
	for _, p := range got {
		if p.Phase == "pull" {
			pulls++
		}
	}
	// One at once, at most one per interval after, and the last of the phase.
	if limit := 2 + int(d/progressInterval); pulls < 2 || pulls > limit {
		t.Fatalf("%d pull notifications in %v, want 2..%d", pulls, d, limit)
	}
	if n := len(got); got[n-2] != (api.Progress{Phase: "pull", Layer: 2, Layers: 2, Done: 5, Total: 5}) ||
		got[n-1] != (api.Progress{Phase: "customize", Message: "installing with apt: openssh-server"}) {
		t.Fatalf("last notifications: %+v", got[max(0, n-2):])
	}
}

func TestProgressOnlyWhenAsked(t *testing.T) {
	m := &Methods{}
	m.Register("test.progress", Typed(func(ctx context.Context, _ empty) (empty, error) {
		progress.Report(ctx, api.Progress{Phase: "pull"}) // no sink: a no-op
		return empty{}, nil
	}))
	m.Register("test.echo", Typed(func(ctx context.Context, p echoParams) (echoParams, error) { return p, nil }))
	sock := startTestServer(t, m)
	for _, req := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"test.progress"}`,
		`{"jsonrpc":"2.0","id":1,"method":"test.progress","progress":false}`,
		`{"jsonrpc":"2.0","id":1,"method":"test.progress","progress":null}`,
	} {
		resp := rawCall(t, sock, req+"\n")
		if resp.Error != nil || string(resp.ID) != "1" {
			t.Errorf("%s: first line is not the response: %+v", req, resp)
		}
	}
	if resp := rawCall(t, sock, `{"jsonrpc":"2.0","id":1,"method":"test.progress","progress":"yes"}`+"\n"); resp.Error == nil || resp.Error.Code != api.CodeInvalidRequest {
		t.Errorf("non-boolean progress: %+v", resp.Error)
	}
	// Params are still decoded strictly.
	if resp := rawCall(t, sock, `{"jsonrpc":"2.0","id":1,"method":"test.echo","progress":true,"params":{"text":"x","bogus":1}}`+"\n"); resp.Error == nil || resp.Error.Code != api.CodeInvalidParams {
		t.Errorf("unknown param with progress: %+v", resp.Error)
	}
	if resp := rawCall(t, sock, `{"jsonrpc":"2.0","id":1,"method":"test.echo","progress":true,"params":{"text":"x"}}`+"\n"); resp.Error != nil || string(resp.Result) != `{"text":"x"}` {
		t.Errorf("echo with progress: %+v", resp)
	}
}

// failingWriter fails every write and counts them.
type failingWriter struct {
	mu     sync.Mutex
	writes int
}

func (w *failingWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return 0, errors.New("broken pipe")
}

func TestProgressWriteErrorDropsTheRest(t *testing.T) {
	w := &failingWriter{}
	s := newProgressSink(w, slog.New(slog.DiscardHandler))
	ctx := progress.With(context.Background(), s.report)
	for _, phase := range []string{"pull", "flatten", "customize", "mkfs"} {
		progress.Report(ctx, api.Progress{Phase: phase})
		time.Sleep(5 * time.Millisecond)
	}
	s.close()
	progress.Report(ctx, api.Progress{Phase: "late"}) // after close: dropped, no panic
	if w.writes != 1 {
		t.Fatalf("%d writes after the first failed one, want none", w.writes-1)
	}
}

func TestProgressClientHangupCancelsHandler(t *testing.T) {
	withProgressInterval(t, time.Millisecond)
	done := make(chan error, 1)
	m := &Methods{}
	m.Register("test.progress", Typed(func(ctx context.Context, _ empty) (empty, error) {
		for i := 0; ctx.Err() == nil; i++ {
			progress.Report(ctx, api.Progress{Phase: "pull", Done: int64(i)})
			time.Sleep(time.Millisecond)
		}
		done <- ctx.Err()
		return empty{}, ctx.Err()
	}))
	sock := startTestServer(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := client.New(sock).CallProgress(ctx, "test.progress", nil, nil, func(api.Progress) {
		if calls++; calls == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("call: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler ctx: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler was not cancelled when the client hung up")
	}
}
