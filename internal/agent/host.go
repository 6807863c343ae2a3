package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Channel is a byte stream to a guest agent: a net.Conn (the Unix socket
// QEMU serves for the virtio-serial port, a hybrid vsock connection) or a
// pollable *os.File.
type Channel interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// ErrLegacyAgent is wrapped by Connect's error when the guest runs an
// agent from before the session layer: it answered the line-protocol ping
// but not the sync. The *LegacyAgentError carries its ping reply.
var ErrLegacyAgent = errors.New("the guest agent predates banger's session layer")

// LegacyAgentError is Connect's error for an agent that only pings.
type LegacyAgentError struct {
	Reply Reply
}

func (e *LegacyAgentError) Error() string {
	return fmt.Sprintf("the guest agent (version %s) only answers pings: rebuild the image so that it has this banger's agent (exec, cp and clock sync need it)", e.Reply.AgentVersion)
}

func (e *LegacyAgentError) Unwrap() error { return ErrLegacyAgent }

// Session is the host's side of one multiplexed connection to a guest
// agent. It is safe for concurrent use: every Open is its own stream.
type Session struct {
	mux  *yamux.Session
	conn Channel
	// AgentVersion is the version the agent named in its sync answer.
	AgentVersion string
}

// syncAttempt is the first sync attempt's wait for an answer; each further
// attempt waits twice as long, up to syncAttemptMax.
const (
	syncAttempt    = 500 * time.Millisecond
	syncAttemptMax = 4 * time.Second
	// legacyGrace is how long Connect keeps waiting for the sync answer
	// after the line-protocol ping was answered: a current agent sends
	// both at once.
	legacyGrace = 1500 * time.Millisecond
)

// Connect runs the sync phase on conn and starts the multiplexer. conn is
// a fresh connection to the agent channel (vmm.AgentDialer); the Session
// owns it from then on and closes it in Close, also when Connect fails.
// ctx bounds the sync phase only. A guest whose agent answers the legacy
// ping but not the sync gives an error wrapping ErrLegacyAgent (a
// *LegacyAgentError); a guest that does not answer gives an error wrapping
// ctx's error.
func Connect(ctx context.Context, conn Channel, log *slog.Logger) (*Session, error) {
	br, version, err := syncHost(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	mux, err := yamux.Client(&bufRWC{ReadWriteCloser: conn, r: br}, yamuxConfig(log))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start the session: %w", err)
	}
	return &Session{mux: mux, conn: conn, AgentVersion: version}, nil
}

// syncHost sends sync attempts until the agent answers the newest one.
func syncHost(ctx context.Context, conn Channel) (*bufio.Reader, string, error) {
	release := bindDeadline(ctx, conn)
	defer release()
	br := bufio.NewReaderSize(conn, MaxLineBytes)
	wait := syncAttempt
	var legacy *Reply
	var legacyAt time.Time
	for {
		nonce, err := newID()
		if err != nil {
			return nil, "", err
		}
		ping, _ := json.Marshal(Request{Op: OpPing, ID: nonce})
		msg := "\n\n" + string(ping) + "\n" + syncPrefix + fmt.Sprint(SessionVersion) + " " + nonce + "\n"
		if _, err := io.WriteString(conn, msg); err != nil {
			return nil, "", fmt.Errorf("sync with the guest agent: send: %w", ctxError(ctx, err))
		}
		attemptEnd := time.Now().Add(wait)
		want := syncedPrefix + fmt.Sprint(SessionVersion) + " " + nonce
		for {
			end := attemptEnd
			if legacy != nil {
				end = legacyAt.Add(legacyGrace)
			}
			if d, ok := ctx.Deadline(); ok && d.Before(end) {
				end = d
			}
			_ = conn.SetReadDeadline(end)
			line, tooLong, err := readLine(br)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil, "", fmt.Errorf("sync with the guest agent: the channel closed: %w", io.ErrUnexpectedEOF)
				}
				if cerr := ctx.Err(); cerr != nil {
					return nil, "", fmt.Errorf("sync with the guest agent: no answer: %w", cerr)
				}
				if !errors.Is(err, errTimeout) && !isTimeout(err) {
					return nil, "", fmt.Errorf("sync with the guest agent: %w", err)
				}
				if legacy != nil && !time.Now().Before(legacyAt.Add(legacyGrace)) {
					return nil, "", &LegacyAgentError{Reply: *legacy}
				}
				if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
					return nil, "", fmt.Errorf("sync with the guest agent: no answer: %w", context.DeadlineExceeded)
				}
				break // next attempt
			}
			if tooLong {
				continue
			}
			s := string(line)
			if rest, ok := strings.CutPrefix(s, want); ok {
				// The bytes after the answer belong to the session: the
				// reader is handed on, deadline cleared by release.
				return br, strings.TrimSpace(rest), nil
			}
			var r Reply
			if legacy == nil && json.Unmarshal(line, &r) == nil && r.ID == nonce {
				legacy, legacyAt = &r, time.Now()
			}
		}
		wait = min(2*wait, syncAttemptMax)
	}
}

var errTimeout = errors.New("timeout")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Open opens a stream for op with params, waits for the guest's answer
// and decodes its result into result (when not nil). On success the
// returned connection carries the op's bytes; the caller closes it. A
// refused stream is a *RemoteError. ctx bounds the opening only.
//
// Streams are yamux streams: Close (and CloseWrite, which is the same) is
// a half-close: the guest reads end of file, this side can read on until
// the guest closes its side. A stream whose peer never closes is dropped a
// minute after Close.
func (s *Session) Open(ctx context.Context, op string, params, result any) (net.Conn, error) {
	c, err := s.mux.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("%s: open a stream to the guest agent: %w", op, err)
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	release := bindDeadline(ctx, c)
	defer release()
	req := StreamRequest{Op: op}
	if params != nil {
		if req.Params, err = json.Marshal(params); err != nil {
			return nil, fmt.Errorf("%s: encode params: %w", op, err)
		}
	}
	if err := writeLine(c, req); err != nil {
		return nil, fmt.Errorf("%s: send the request to the guest agent: %w", op, ctxError(ctx, err))
	}
	br := bufio.NewReader(c)
	var resp StreamResponse
	if err := readHeader(br, &resp); err != nil {
		return nil, fmt.Errorf("%s: read the guest agent's answer: %w", op, ctxError(ctx, err))
	}
	if !resp.OK {
		return nil, &RemoteError{Op: op, Code: resp.Code, Message: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return nil, fmt.Errorf("%s: decode the guest agent's result: %w", op, err)
		}
	}
	ok = true
	return &bufConn{Conn: c, r: br}, nil
}

// Call is Open for an op without bytes of its own: it opens the stream,
// decodes the result and closes the stream.
func (s *Session) Call(ctx context.Context, op string, params, result any) error {
	c, err := s.Open(ctx, op, params, result)
	if err != nil {
		return err
	}
	return c.Close()
}

// Ping asks the agent for the guest's facts and clock. rtt is the round
// trip; offset is how far the guest's wall clock is ahead of the host's
// (negative: behind), measured as NTP does: against the middle of the
// round trip.
func (s *Session) Ping(ctx context.Context) (info Info, rtt, offset time.Duration, err error) {
	t0 := time.Now()
	if err := s.Call(ctx, OpPing, nil, &info); err != nil {
		return Info{}, 0, 0, err
	}
	t2 := time.Now()
	rtt = t2.Sub(t0)
	mid := t0.Add(rtt / 2)
	offset = time.Unix(0, info.TimeUnixNano).Sub(mid)
	return info, rtt, offset, nil
}

// Done is closed when the session has ended (Close, a failed keepalive,
// the channel closed).
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Alive reports whether the session has not ended yet.
func (s *Session) Alive() bool {
	select {
	case <-s.Done():
		return false
	default:
		return true
	}
}

// End asks the agent to end this session and go back to waiting for a
// sync, then closes the session and its connection. An agent that predates
// OpEndSession gives an error matching ErrUnknownOpCode (the session is
// closed all the same). When End returns nil the agent has answered, and
// ends its side of the session a moment later; a line-protocol Ping on a
// new connection is answered once it has.
func (s *Session) End(ctx context.Context) error {
	err := s.Call(ctx, OpEndSession, nil, nil)
	s.Close()
	return err
}

// Close ends the session and closes its connection.
func (s *Session) Close() error {
	err := s.mux.Close()
	s.conn.Close()
	return err
}
