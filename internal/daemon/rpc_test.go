package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
)

type echoParams struct {
	Text string `json:"text"`
}

// startTestServer serves methods on a socket in a temp dir.
func startTestServer(t *testing.T, methods *Methods) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr-rpc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	ln, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &rpcServer{methods: methods, info: api.DaemonInfo{Version: "test-1", PID: 42}, log: slog.New(slog.DiscardHandler), uid: os.Getuid()}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.serve(ctx, ln)
	t.Cleanup(func() { cancel(); ln.Close() })
	return sock
}

func testMethods() *Methods {
	m := &Methods{}
	m.Register("test.echo", Typed(func(ctx context.Context, p echoParams) (echoParams, error) { return p, nil }))
	m.Register("test.notfound", Typed(func(ctx context.Context, _ empty) (empty, error) {
		return empty{}, fmt.Errorf("lookup: %w", store.ErrNotFound)
	}))
	m.Register("test.exists", Typed(func(ctx context.Context, _ empty) (empty, error) {
		return empty{}, api.Errorf(api.ErrExists, "a VM named %q already exists", "dev")
	}))
	m.Register("test.panic", Typed(func(ctx context.Context, _ empty) (empty, error) { panic("boom") }))
	m.Register("test.wait", Typed(func(ctx context.Context, _ empty) (empty, error) {
		<-ctx.Done()
		return empty{}, ctx.Err()
	}))
	return m
}

func TestRegisterPanicsOnDuplicate(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate registration did not panic")
		}
	}()
	m := &Methods{}
	m.Register("a", nil)
	m.Register("a", nil)
}

func TestDaemonMethodTableIsComplete(t *testing.T) {
	d := &Daemon{}
	m := d.methods()
	want := []string{api.MethodDaemonStatus, api.MethodDaemonStop, api.MethodVMCreate, api.MethodVMList,
		api.MethodVMGet, api.MethodVMStart, api.MethodVMStop, api.MethodVMRestart, api.MethodVMPause, api.MethodVMResume, api.MethodVMDelete,
		api.MethodVMSSHInfo, api.MethodVMPing, api.MethodImageBuild, api.MethodImageList, api.MethodImageGet, api.MethodImageDelete,
		api.MethodImageImport, api.MethodImageCheckAgent, api.MethodDaemonInfo, api.MethodVMExec, api.MethodVMCopyIn, api.MethodVMCopyOut,
		api.MethodSSHConfig, api.MethodVMForward, api.MethodVMMount, api.MethodImageWarm}
	for _, w := range []string{api.MethodVMExec, api.MethodVMCopyIn, api.MethodVMCopyOut} {
		if !m.streaming[w] {
			t.Errorf("method %s is not a streaming method", w)
		}
	}
	for _, w := range want {
		if _, ok := m.m[w]; !ok {
			t.Errorf("method %s not registered", w)
		}
	}
	if len(m.m) != len(want) {
		t.Errorf("registered %d methods, want %d: %v", len(m.m), len(want), m.Names())
	}
}

func TestClientRoundTripAndErrorMapping(t *testing.T) {
	sock := startTestServer(t, testMethods())
	c := client.New(sock)
	ctx := context.Background()
	var out echoParams
	if err := c.Call(ctx, "test.echo", echoParams{Text: "hi"}, &out); err != nil || out.Text != "hi" {
		t.Fatalf("echo: %+v, %v", out, err)
	}
	if d := c.LastDaemon(); d.Version != "test-1" || d.PID != 42 {
		t.Fatalf("response does not identify the daemon: %+v", d)
	}
	if err := c.Call(ctx, "test.notfound", nil, nil); !client.IsNotFound(err) {
		t.Fatalf("not found mapped to %v", err)
	}
	err := c.Call(ctx, "test.exists", nil, nil)
	if !client.IsExists(err) || err.Error() != `a VM named "dev" already exists` {
		t.Fatalf("exists mapped to %v", err)
	}
	if err := c.Call(ctx, "test.nope", nil, nil); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown method: %v", err)
	}
	var re *api.RemoteError
	if err := c.Call(ctx, "test.echo", map[string]any{"text": "x", "bogus": 1}, nil); !errors.As(err, &re) || re.Code != api.CodeInvalidParams {
		t.Fatalf("unknown field: %v", err)
	}
	if err := c.Call(ctx, "test.panic", nil, nil); !errors.As(err, &re) || re.Code != api.CodeInternal {
		t.Fatalf("panic: %v", err)
	}
	// The server survived all of that.
	if err := c.Call(ctx, "test.echo", echoParams{Text: "still here"}, &out); err != nil {
		t.Fatal(err)
	}
}

// rawCall writes raw bytes and returns the decoded response.
func rawCall(t *testing.T, sock, raw string) api.Response {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read response to %q: %v", raw, err)
	}
	var resp api.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		t.Fatalf("bad response %q: %v", line, err)
	}
	return resp
}

func TestMalformedRequests(t *testing.T) {
	sock := startTestServer(t, testMethods())
	for _, tc := range []struct {
		raw  string
		code int
	}{
		{"this is not json\n", api.CodeParseError},
		{`{"jsonrpc":"2.0","method":` + "\n", api.CodeParseError},
		{`{"jsonrpc":"1.0","id":1,"method":"test.echo"}` + "\n", api.CodeInvalidRequest},
		{`{"jsonrpc":"2.0","id":1}` + "\n", api.CodeInvalidRequest},
		{`{"jsonrpc":"2.0","id":1,"method":"vm.frobnicate"}` + "\n", api.CodeMethodNotFound},
		{`{"jsonrpc":"2.0","id":1,"method":"test.echo","params":[1,2]}` + "\n", api.CodeInvalidParams},
		{`{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"text":5}}` + "\n", api.CodeInvalidParams},
		{strings.Repeat("x", maxRequestBytes+10) + "\n", api.CodeParseError},
	} {
		resp := rawCall(t, sock, tc.raw)
		if resp.Error == nil || resp.Error.Code != tc.code {
			t.Errorf("%.40q: got %+v, want code %d", tc.raw, resp.Error, tc.code)
		}
		if resp.Daemon.Version != "test-1" {
			t.Errorf("%.40q: response lacks daemon info", tc.raw)
		}
	}
	resp := rawCall(t, sock, `{"jsonrpc":"2.0","id":"abc","method":"test.echo","params":{"text":"ok"}}`+"\n")
	if resp.Error != nil || string(resp.ID) != `"abc"` {
		t.Fatalf("valid request after garbage: %+v", resp)
	}
}

func TestHangupCancelsRequest(t *testing.T) {
	done := make(chan error, 1)
	m := &Methods{}
	m.Register("test.wait", Typed(func(ctx context.Context, _ empty) (empty, error) {
		<-ctx.Done()
		done <- ctx.Err()
		return empty{}, ctx.Err()
	}))
	sock := startTestServer(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	client.New(sock).Call(ctx, "test.wait", nil, nil)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler ctx: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler was not cancelled when the client hung up")
	}
}

// TestListenRefusesLiveSocket: a second daemon does not steal the socket
// of a running one, and says how to stop it (package safesocket tests the
// stale-socket and mode rules).
func TestListenRefusesLiveSocket(t *testing.T) {
	sock := startTestServer(t, testMethods())
	_, err := listen(sock)
	if err == nil || !strings.Contains(err.Error(), "already listening") || !strings.Contains(err.Error(), "banger daemon stop") {
		t.Fatalf("second listen: %v", err)
	}
	if err := client.New(sock).Call(context.Background(), "test.echo", echoParams{Text: "x"}, nil); err != nil {
		t.Fatalf("the first daemon no longer answers: %v", err)
	}
}

func TestClientErrorWhenDaemonAbsent(t *testing.T) {
	err := client.New(filepath.Join(t.TempDir(), "none.sock")).Call(context.Background(), "daemon.status", nil, nil)
	if !errors.Is(err, client.ErrDaemonNotRunning) || !strings.Contains(err.Error(), "start it") {
		t.Fatalf("got %v", err)
	}
}

// TestMain lets the test binary act as a client under another uid.
func TestMain(m *testing.M) {
	sandbox.Main()
	if sock := os.Getenv("BANGER_TEST_DIAL"); sock != "" {
		err := client.New(sock).Call(context.Background(), "test.echo", echoParams{Text: "x"}, nil)
		fmt.Print(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestOtherUIDIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		testhost.Skip(t, "needs root to run a client as another uid")
	}
	sock := startTestServer(t, testMethods())
	// Open the file mode so only the peer-credential check stands in the way.
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o666)
	// The test binary lives in a 0700 build folder: copy it where uid 65534
	// can run it.
	dir, err := os.MkdirTemp("", "bgr-uid-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin, _ := os.ReadFile(os.Args[0])
	exe := filepath.Join(dir, "client")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "BANGER_TEST_DIAL="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid 65534: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "permission denied") {
		t.Fatalf("request from another uid was not refused: %q", out)
	}
}

// TestAfterResponse: a handler's afterResponse function runs only once the
// client has the response (it waits for the client here: run before the
// write, it would never return).
func TestAfterResponse(t *testing.T) {
	clientHasIt, hookRan := make(chan struct{}), make(chan struct{})
	m := &Methods{}
	m.Register("test.after", Typed(func(ctx context.Context, _ empty) (echoParams, error) {
		afterResponse(ctx, func() { <-clientHasIt; close(hookRan) })
		return echoParams{Text: "answered"}, nil
	}))
	c := client.New(startTestServer(t, m))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got echoParams
	if err := c.Call(ctx, "test.after", nil, &got); err != nil || got.Text != "answered" {
		t.Fatalf("call: %+v, %v", got, err)
	}
	close(clientHasIt)
	select {
	case <-hookRan:
	case <-time.After(5 * time.Second):
		t.Fatal("the after-response function did not run")
	}
}

// TestDaemonStopAnswersThenStops: daemon.stop answers, then asks the daemon
// to stop, with no sleep in between.
func TestDaemonStopAnswersThenStops(t *testing.T) {
	d := &Daemon{stop: make(chan struct{})}
	c := client.New(startTestServer(t, d.methods()))
	if err := c.StopDaemon(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.stop:
	case <-time.After(time.Second):
		t.Fatal("daemon.stop answered but the daemon was not asked to stop")
	}
}

// TestDrain: at shutdown a request gets the grace period, then its context
// is cancelled and the server waits until it has returned.
func TestDrain(t *testing.T) {
	dir, err := os.MkdirTemp("", "bgr-rpc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "d.sock")
	ln, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	m := testMethods()
	entered := make(chan struct{})
	m.Register("test.hold", Typed(func(ctx context.Context, _ empty) (empty, error) {
		close(entered)
		<-ctx.Done()
		return empty{}, ctx.Err()
	}))
	srv := &rpcServer{methods: m, log: slog.New(slog.DiscardHandler), uid: os.Getuid()}
	reqCtx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.serve(reqCtx, ln); close(served) }()
	callErr := make(chan error, 1)
	go func() { callErr <- client.New(sock).Call(context.Background(), "test.hold", nil, nil) }()
	select {
	case <-entered: // the request is in its handler
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached its handler")
	}
	ln.Close()
	<-served
	start := time.Now()
	if !srv.drain(300*time.Millisecond, 5*time.Second, cancel) {
		t.Fatal("drain gave up on a request that honours its context")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("drain cancelled the request after %s, before the grace period", took)
	}
	if err := <-callErr; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("the cancelled request answered %v", err)
	}
}

// TestEncodeResponse: the hand-assembled response line is exactly what
// json.Marshal makes of api.Response.
func TestEncodeResponse(t *testing.T) {
	info := api.DaemonInfo{Version: "v1", PID: 7, Executable: "/bin/bangerd", ExecutableID: "1-2"}
	for _, tc := range []struct {
		id     string
		result string
		err    *api.Error
	}{
		{`1`, `{"vms":[{"name":"a\u003cb"}]}`, nil},
		{`"x"`, `[]`, nil},
		{``, ``, &api.Error{Code: api.CodeParseError, Message: "parse error: <bad>"}},
		{`7`, ``, &api.Error{Code: api.CodeNotFound, Message: "no VM named \"dev\""}},
		{`{ "a" : 1 }`, `null`, nil},
	} {
		want := api.Response{JSONRPC: api.Version, ID: json.RawMessage(tc.id), Error: tc.err, Daemon: info}
		if tc.id == "" {
			want.ID = json.RawMessage("null")
		}
		if tc.result != "" {
			want.Result = json.RawMessage(tc.result)
		}
		wb, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got := encodeResponse(json.RawMessage(tc.id), []byte(tc.result), tc.err, info)
		if string(got) != string(wb)+"\n" {
			t.Errorf("encodeResponse(%s, %s, %v)\n got %s\nwant %s", tc.id, tc.result, tc.err, got, wb)
		}
	}
}

// TestStreamingMethod: a streaming method answers, then the connection
// carries its bytes both ways (here: upper-casing what the client sends,
// through splice and a socketpair standing in for the agent stream), each
// end of file passed on; a refusal is an ordinary error response.
func TestStreamingMethod(t *testing.T) {
	m := &Methods{}
	m.RegisterStream("test.upper", Typed(func(ctx context.Context, p echoParams) (*Stream, error) {
		if p.Text == "no" {
			return nil, api.Errorf(api.ErrNotFound, "no such thing")
		}
		d, g := testhost.SocketPair(t)
		go func() { // the "guest": upper-cases until end of file, then closes
			buf, _ := io.ReadAll(g)
			g.Write([]byte(strings.ToUpper(string(buf))))
			g.Close()
		}()
		return &Stream{Result: echoParams{Text: "ready " + p.Text}, Serve: func(ctx context.Context, conn StreamConn) error {
			return splice(ctx, conn, d)
		}}, nil
	}))
	sock := startTestServer(t, m)
	c := client.New(sock)
	var res echoParams
	sc, err := c.CallStream(context.Background(), "test.upper", echoParams{Text: "x"}, &res)
	if err != nil || res.Text != "ready x" {
		t.Fatalf("call: %+v %v", res, err)
	}
	sc.Write([]byte("hello through the daemon"))
	sc.CloseWrite()
	got, err := io.ReadAll(sc)
	sc.Close()
	if err != nil || string(got) != "HELLO THROUGH THE DAEMON" {
		t.Fatalf("stream: %q %v", got, err)
	}
	_, err = c.CallStream(context.Background(), "test.upper", echoParams{Text: "no"}, nil)
	if !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "no such thing") {
		t.Fatalf("refused stream: %v", err)
	}
}
