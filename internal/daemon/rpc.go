package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/progress"
)

// maxRequestBytes bounds one request so a misbehaving client cannot make the
// daemon buffer without limit.
const maxRequestBytes = 1 << 20

// HandlerFunc answers one method call. params is the raw "params" member.
type HandlerFunc func(ctx context.Context, params json.RawMessage) (any, error)

// Methods is the daemon's method table.
type Methods struct {
	m map[string]HandlerFunc
	// streaming marks the methods registered with RegisterStream.
	streaming map[string]bool
}

// Stream is the result of a streaming method's handler: Result is sent as
// the response, then Serve owns the connection (see api.Stream) until it
// returns; the connection is closed after it. ctx ends when the daemon
// stops.
type Stream struct {
	Result any
	Serve  func(ctx context.Context, conn StreamConn) error
}

// StreamConn is the client's connection once a streaming method has
// answered: reads return the bytes after the request line, CloseWrite
// ends the daemon's direction.
type StreamConn interface {
	io.ReadWriter
	CloseWrite() error
}

// RegisterStream adds a streaming method: h returns a *Stream (when it
// returns an error, that is the response and the connection closes). It
// panics when name is already registered.
func (t *Methods) RegisterStream(name string, h HandlerFunc) {
	t.Register(name, h)
	if t.streaming == nil {
		t.streaming = map[string]bool{}
	}
	t.streaming[name] = true
}

// Register adds a method. It panics when name is already registered: that is
// a programming error caught by the method-table test.
func (t *Methods) Register(name string, h HandlerFunc) {
	if t.m == nil {
		t.m = map[string]HandlerFunc{}
	}
	if _, dup := t.m[name]; dup {
		panic("daemon: duplicate method " + name)
	}
	t.m[name] = h
}

// Names returns the registered method names.
func (t *Methods) Names() []string {
	out := make([]string, 0, len(t.m))
	for n := range t.m {
		out = append(out, n)
	}
	return out
}

// Typed adapts fn to a HandlerFunc, decoding params strictly: unknown fields
// and trailing data are errors, so a typo in a client is caught.
func Typed[P, R any](fn func(context.Context, P) (R, error)) HandlerFunc {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p P
		if len(bytes.TrimSpace(raw)) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil {
				return nil, &api.Error{Code: api.CodeInvalidParams, Message: "invalid params: " + err.Error()}
			}
			if dec.More() {
				return nil, &api.Error{Code: api.CodeInvalidParams, Message: "invalid params: trailing data"}
			}
		}
		return fn(ctx, p)
	}
}

// rpcServer serves the method table on a Unix socket.
type rpcServer struct {
	methods *Methods
	info    api.DaemonInfo
	log     *slog.Logger
	uid     int
	// wg counts the connections being served.
	wg sync.WaitGroup
}

// afterKey is the context key of a call's afterResponse list.
type afterKey struct{}

// afterResponse makes fn run once the response to the call ctx belongs to
// has been written (or could not be), so a handler can answer first and
// act after: daemon.stop stops the daemon that way. Outside a call, fn
// runs at once.
func afterResponse(ctx context.Context, fn func()) {
	if after, ok := ctx.Value(afterKey{}).(*[]func()); ok {
		*after = append(*after, fn)
		return
	}
	fn()
}

// serve accepts connections until ln is closed.
func (s *rpcServer) serve(ctx context.Context, ln *net.UnixListener) error {
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("accept", "err", err)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

// drain waits for the connections being served to end, after the listener
// closed: grace for their requests to finish, then it calls cancel (which
// must cancel the requests' context) and waits up to drainFor more. It
// reports whether they all ended.
func (s *rpcServer) drain(grace, drainFor time.Duration, cancel func()) bool {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(grace):
	}
	s.log.Info("cancelling requests still running", "after", grace)
	cancel()
	select {
	case <-done:
		return true
	case <-time.After(drainFor):
		return false
	}
}

// peerUID returns the uid of the process on the other end of conn.
func peerUID(conn *net.UnixConn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

func (s *rpcServer) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	if uid, err := peerUID(conn); err != nil || uid != s.uid {
		s.log.Warn("refused connection from another user", "peer_uid", uid, "err", err)
		s.write(conn, nil, nil, &api.Error{Code: api.CodePermissionDenied,
			Message: fmt.Sprintf("permission denied: this bangerd serves uid %d only; run banger as that user or start your own daemon", s.uid)})
		return
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	line, err := readLine(r, maxRequestBytes)
	if err != nil {
		if len(line) > 0 || !errors.Is(err, errEOF) {
			s.write(conn, nil, nil, &api.Error{Code: api.CodeParseError, Message: "parse error: " + err.Error()})
		}
		return
	}
	var req struct {
		api.Request
		// Progress is the "progress" extension member (api.ProgressRequest),
		// kept raw so that a non-boolean is an invalid request, not a parse
		// error.
		Progress json.RawMessage `json:"progress"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		s.write(conn, nil, nil, &api.Error{Code: api.CodeParseError, Message: "parse error: " + err.Error()})
		return
	}
	if req.JSONRPC != api.Version || req.Method == "" {
		s.write(conn, req.ID, nil, &api.Error{Code: api.CodeInvalidRequest, Message: `invalid request: need "jsonrpc": "2.0" and a "method"`})
		return
	}
	wantProgress, err := progressRequested(req.Progress)
	if err != nil {
		s.write(conn, req.ID, nil, &api.Error{Code: api.CodeInvalidRequest, Message: err.Error()})
		return
	}
	h, ok := s.methods.m[req.Method]
	if !ok {
		s.write(conn, req.ID, nil, &api.Error{Code: api.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.Method)})
		return
	}

	// The request is cancelled when the client hangs up. A streaming
	// method reads the connection itself.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Deferred after the connection's Close, so it runs before it: the
	// response is written by then.
	var after []func()
	rctx = context.WithValue(rctx, afterKey{}, &after)
	defer func() {
		for _, fn := range after {
			fn()
		}
	}()
	if s.methods.streaming[req.Method] {
		s.serveStream(rctx, conn, r, req.ID, req.Method, h, req.Params)
		return
	}
	go func() {
		var b [1]byte
		if _, err := r.Read(b[:]); err != nil {
			cancel()
		}
	}()

	// With progress, notifications and the response share the connection:
	// the sink writes through out and is closed before the response.
	out := &lockedWriter{w: conn}
	var sink *progressSink
	if wantProgress {
		sink = newProgressSink(out, s.log.With("method", req.Method))
		rctx = progress.With(rctx, sink.report)
	}

	result, herr := s.call(rctx, req.Method, h, req.Params)
	if sink != nil {
		sink.close()
	}
	if herr != nil {
		s.log.Info("request failed", "method", req.Method, "err", herr)
		s.write(out, req.ID, nil, &api.Error{Code: api.CodeFor(herr), Message: herr.Error()})
		return
	}
	s.write(out, req.ID, result, nil)
}

// serveStream answers a streaming method and hands the connection to its
// Serve.
func (s *rpcServer) serveStream(ctx context.Context, conn *net.UnixConn, r *bufio.Reader, id json.RawMessage, method string, h HandlerFunc, params json.RawMessage) {
	res, herr := s.call(ctx, method, h, params)
	st, ok := res.(*Stream)
	if herr == nil && !ok {
		herr = fmt.Errorf("internal error in %s: a streaming method returned %T", method, res)
	}
	if herr != nil {
		s.log.Info("request failed", "method", method, "err", herr)
		s.write(conn, id, nil, &api.Error{Code: api.CodeFor(herr), Message: herr.Error()})
		return
	}
	s.write(conn, id, st.Result, nil)
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("stream panic", "method", method, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	if err := st.Serve(ctx, &streamConn{UnixConn: conn, r: r}); err != nil {
		s.log.Info("stream ended with an error", "method", method, "err", err)
	}
}

// streamConn reads through the request's buffered reader.
type streamConn struct {
	*net.UnixConn
	r *bufio.Reader
}

func (c *streamConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// call runs h, turning a panic into an internal error: the daemon never dies
// from a bad request.
func (s *rpcServer) call(ctx context.Context, method string, h HandlerFunc, params json.RawMessage) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "method", method, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error in %s: %v (see the daemon log)", method, p)
		}
	}()
	return h(ctx, params)
}

// write writes the response line to w.
func (s *rpcServer) write(w io.Writer, id json.RawMessage, result any, rerr *api.Error) {
	var body []byte
	if rerr == nil {
		b, err := json.Marshal(result)
		if err != nil {
			rerr = &api.Error{Code: api.CodeInternal, Message: "encode result: " + err.Error()}
		} else {
			body = b
		}
	}
	if _, err := w.Write(encodeResponse(id, body, rerr, s.info)); err != nil {
		s.log.Debug("write response", "err", err)
	}
}

// encodeResponse is the response line: the JSON of api.Response, built
// around result (already JSON) instead of by json.Marshal, which would scan
// and copy a RawMessage again: for a vm.list of 1,000 VMs that doubled the
// encoding time.
func encodeResponse(id json.RawMessage, result []byte, rerr *api.Error, info api.DaemonInfo) []byte {
	var idBuf bytes.Buffer
	if len(id) == 0 || json.Compact(&idBuf, id) != nil {
		idBuf.Reset()
		idBuf.WriteString("null")
	}
	daemon, _ := json.Marshal(info)
	b := make([]byte, 0, len(result)+len(daemon)+128)
	b = append(b, `{"jsonrpc":"`+api.Version+`","id":`...)
	b = append(b, idBuf.Bytes()...)
	b = append(b, `,"daemon":`...)
	b = append(b, daemon...)
	if rerr != nil {
		e, _ := json.Marshal(rerr)
		b = append(b, `,"error":`...)
		b = append(b, e...)
	} else if len(result) > 0 {
		b = append(b, `,"result":`...)
		b = append(b, result...)
	}
	return append(b, "}\n"...)
}

var errEOF = errors.New("connection closed before a full request")

// readLine reads up to a newline (or EOF after data), refusing more than max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > max {
			return buf, fmt.Errorf("request larger than %d bytes", max)
		}
		if err == nil {
			return buf, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(bytes.TrimSpace(buf)) > 0 {
			return buf, nil // EOF after a request without newline: accept it
		}
		return nil, errEOF
	}
}
