package agent

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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Handler serves one stream of its op in the guest. It reads the op's
// params with st.Decode, then either returns an error (the host gets it as
// a refused stream: a *RemoteError, with the code of a *HandlerError or
// CodeFailed) or calls st.Accept with the op's result and then uses st
// for the op's own bytes. The stream is closed when the handler returns;
// ctx ends when the session does.
type Handler func(ctx context.Context, st *Stream) error

// HandlerError is an error with a stream error code (CodeInvalid,
// CodeNotFound, ...), for a handler to return before Accept.
type HandlerError struct {
	Code string
	Err  error
}

func (e *HandlerError) Error() string { return e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// Errorf returns a *HandlerError with code and a formatted message.
func Errorf(code, format string, args ...any) error {
	return &HandlerError{Code: code, Err: fmt.Errorf(format, args...)}
}

// Stream is one stream as a guest handler sees it: a net.Conn carrying
// the op's bytes once accepted.
type Stream struct {
	net.Conn
	// Op is the operation the host asked for.
	Op string
	// Params are the request's raw params.
	Params   json.RawMessage
	accepted bool
}

// Decode decodes the request's params into v strictly (unknown fields are
// an error); a failure should be returned as is (it has CodeInvalid).
func (st *Stream) Decode(v any) error {
	if err := decodeStrict(st.Params, v); err != nil {
		return Errorf(CodeInvalid, "%s: invalid params: %v", st.Op, err)
	}
	return nil
}

// Accept answers the request with ok and result (which may be nil). After
// it, the stream carries the op's own bytes.
func (st *Stream) Accept(result any) error {
	if st.accepted {
		return errors.New("stream already accepted")
	}
	st.accepted = true
	resp := StreamResponse{OK: true}
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return fmt.Errorf("%s: encode result: %w", st.Op, err)
		}
		resp.Result = b
	}
	return writeLine(st.Conn, resp)
}

// Server is the guest side of the session layer: it serves channels (a
// virtio-serial port, vsock connections) and dispatches each stream to
// the handler registered for its op. Register every handler before
// serving.
type Server struct {
	handlers map[string]Handler
	info     InfoFunc
	log      *slog.Logger
}

// NewServer returns a server that answers OpPing with info (also over the
// line protocol of older hosts) and has no other handler yet.
func NewServer(info InfoFunc, log *slog.Logger) *Server {
	s := &Server{handlers: map[string]Handler{}, info: info, log: log}
	s.Handle(OpPing, s.ping)
	s.Handle(OpEndSession, endSession)
	return s
}

// sessionKey is the context key under which runSession gives handlers
// its *sessionConn.
type sessionKey struct{}

// endSession ends the session the request came on. It first stops the
// multiplexer's input (sessionConn.endInput), then answers: whatever the
// host sends once it has the answer is kept for the scan that follows,
// never eaten by the multiplexer. Then it closes the session.
func endSession(ctx context.Context, st *Stream) error {
	sc, _ := ctx.Value(sessionKey{}).(*sessionConn)
	if sc == nil {
		return Errorf(CodeFailed, "%s: not in a session", OpEndSession)
	}
	sc.endInput()
	err := st.Accept(nil)
	sc.mux.Close()
	return err
}

// sessionConn is a session's channel as the multiplexer sees it. Once
// endInput is called, the bytes read from the channel are kept (leftover)
// instead of handed on, and reads block until the session closes, so the
// multiplexer can still write its last answer.
type sessionConn struct {
	conn   net.Conn  // the channel (an *interruptible)
	r      io.Reader // the channel through the scanner's buffer
	mux    *yamux.Session
	ending atomic.Bool
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	left   []byte
}

func newSessionConn(ic *interruptible, br *bufio.Reader) *sessionConn {
	return &sessionConn{conn: ic, r: br, closed: make(chan struct{})}
}

func (c *sessionConn) Read(b []byte) (int, error) {
	if !c.ending.Load() {
		n, err := c.r.Read(b)
		if !c.ending.Load() {
			return n, err
		}
		c.mu.Lock()
		c.left = append(c.left, b[:n]...)
		c.mu.Unlock()
	}
	<-c.closed
	return 0, io.EOF
}

func (c *sessionConn) Write(b []byte) (int, error) { return c.conn.Write(b) }

// Close (the multiplexer's, when the session ends) interrupts the
// channel's I/O and unblocks Read.
func (c *sessionConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.conn.Close()
}

// endInput stops handing the channel's bytes to the multiplexer.
func (c *sessionConn) endInput() { c.ending.Store(true) }

// leftover is what was read after endInput, once the session has ended:
// the start of the host's next sync. Nil for a session that did not end
// that way.
func (c *sessionConn) leftover() []byte {
	if !c.ending.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.left
}

// errEndedByHost is runSession's error for a session the host ended with
// OpEndSession.
var errEndedByHost = errors.New("the host ended the session")

// Handle registers h for op. It panics when op is taken: two handlers for
// one op is a programming error.
func (s *Server) Handle(op string, h Handler) {
	if _, dup := s.handlers[op]; dup {
		panic("agent: duplicate handler for op " + op)
	}
	s.handlers[op] = h
}

// ping is the session form of the ping: the guest's facts and its clock.
func (s *Server) ping(ctx context.Context, st *Stream) error {
	in, err := s.info()
	if err != nil {
		return err
	}
	in.TimeUnixNano = time.Now().UnixNano()
	return st.Accept(in)
}

// serveChannel serves sessions on ch until ctx is done or ch fails: it
// scans for a sync line, runs a session, and scans again when the session
// ends. It returns nil at end of file while scanning (no host on a
// virtio-serial port; a closed vsock connection), an error wrapping
// ctx.Err() when ctx is done, and a wrapped I/O error otherwise. ch is not
// closed.
func (s *Server) serveChannel(ctx context.Context, ch deadlineConn) error {
	var carry []byte // what the host sent after ending its last session
	for {
		ic := &interruptible{conn: ch}
		stop := context.AfterFunc(ctx, func() { ic.Close() })
		var src io.Reader = ic
		if len(carry) > 0 {
			src = io.MultiReader(bytes.NewReader(carry), ic)
		}
		br := bufio.NewReaderSize(src, MaxLineBytes)
		nonce, err := s.scan(br, ic)
		if err != nil {
			stop()
			ic.Close()
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("serve agent: %w", cerr)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("serve agent: %w", err)
		}
		s.log.Debug("session starts", "nonce", nonce)
		sc := newSessionConn(ic, br)
		err = s.runSession(ctx, sc)
		carry = sc.leftover()
		stop()
		ic.Close()
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("serve agent: %w", cerr)
		}
		s.log.Info("session ended; waiting for the host to sync again", "err", err)
	}
}

// scan reads lines until a sync line, which it answers; legacy JSON pings
// are answered on the way. It returns the sync's nonce.
func (s *Server) scan(br *bufio.Reader, w io.Writer) (string, error) {
	var lastNoSession time.Time
	for {
		line, tooLong, err := readLine(br)
		if err != nil {
			return "", err
		}
		if tooLong {
			continue
		}
		if rest, ok := strings.CutPrefix(string(line), syncPrefix); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[0] != fmt.Sprint(SessionVersion) || len(f[1]) > 64 {
				continue
			}
			ans := syncedPrefix + fmt.Sprint(SessionVersion) + " " + f[1] + " " + strings.ReplaceAll(s.agentVersion(), " ", "_") + "\n"
			if _, err := io.WriteString(w, ans); err != nil {
				return "", fmt.Errorf("answer sync: %w", err)
			}
			return f[1], nil
		}
		reply, ok := handle(line, s.info)
		if !ok {
			// Not a sync, not a ping: perhaps a stream request from a
			// host that still thinks it has a session (this agent
			// restarted under it). Say there is none: to the host's
			// multiplexer that is garbage, which ends its session at
			// once instead of after its keepalive times out.
			if len(bytes.TrimSpace(line)) > 0 && time.Since(lastNoSession) > 100*time.Millisecond {
				lastNoSession = time.Now()
				if _, err := io.WriteString(w, noSessionLine); err != nil {
					return "", fmt.Errorf("write: %w", err)
				}
			}
			continue
		}
		b, _ := json.Marshal(reply)
		if _, err := w.Write(append(b, '\n')); err != nil {
			return "", fmt.Errorf("write reply: %w", err)
		}
	}
}

func (s *Server) agentVersion() string {
	in, err := s.info()
	if err != nil || in.AgentVersion == "" {
		return "unknown"
	}
	return in.AgentVersion
}

// runSession runs the multiplexer on conn until it fails, the host goes
// away, or ctx is done, serving each stream on its own goroutine. It
// returns when every handler has returned.
func (s *Server) runSession(ctx context.Context, conn *sessionConn) error {
	mux, err := yamux.Server(conn, yamuxConfig(s.log))
	if err != nil {
		return err
	}
	conn.mux = mux
	sctx, cancel := context.WithCancel(context.WithValue(ctx, sessionKey{}, conn))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { mux.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			mux.Close()
			if conn.ending.Load() {
				return errEndedByHost
			}
			return err
		}
		wg.Go(func() { s.serveStream(sctx, st) })
	}
}

// serveStream reads a stream's header and runs its handler.
func (s *Server) serveStream(ctx context.Context, c net.Conn) {
	defer c.Close()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
	br := bufio.NewReader(c)
	var req StreamRequest
	if err := readHeader(br, &req); err != nil {
		_ = writeLine(c, StreamResponse{Code: CodeInvalid, Error: "read request: " + err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	h := s.handlers[req.Op]
	if h == nil {
		_ = writeLine(c, StreamResponse{Code: CodeUnknownOp, Error: fmt.Sprintf("the guest agent (version %s) does not know the operation %q: rebuild the image so that it has this banger's agent", s.agentVersion(), req.Op)})
		return
	}
	st := &Stream{Conn: &bufConn{Conn: c, r: br}, Op: req.Op, Params: req.Params}
	err := h(ctx, st)
	if err != nil && !st.accepted {
		code := CodeFailed
		var he *HandlerError
		if errors.As(err, &he) {
			code = he.Code
		}
		_ = writeLine(c, StreamResponse{Code: code, Error: err.Error()})
		return
	}
	if err != nil {
		s.log.Info("stream ended with an error", "op", req.Op, "err", err)
	}
}

// ServeConn serves sessions on one connection (a vsock connection) until
// the peer closes it or ctx is done; see serveChannel. It does not close c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	return s.serveChannel(ctx, c)
}
