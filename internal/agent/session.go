package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// The session layer: one multiplexed connection per guest.
//
// A channel (a virtio-serial port, a vsock connection) carries, after a sync
// phase, a yamux session. Each yamux stream serves one operation: the host
// opens the stream and writes one header line, the guest answers with one
// header line, and then the stream belongs to the operation:
//
//	-> {"op":"exec","params":{...}}
//	<- {"ok":true,"result":{...}}          (or {"ok":false,"code":"unknown_op","error":"..."})
//	   ... bytes of the operation, in both directions, until either side closes ...
//
// Sync phase. A virtio-serial port has no connection boundaries: bytes of an
// earlier session can still be in flight in either direction when the next
// one starts. So the host opens every session with
//
//	"\n\n" {"op":"ping","id":NONCE} "\n" "BANGER-SYNC 1 " NONCE "\n"
//
// and reads and discards everything until the line "BANGER-SYNCED 1 NONCE
// VERSION". The guest, while it has no session (at start, and whenever its
// multiplexer fails or sees its peer vanish), scans its input line by line:
// a sync line is answered and starts the multiplexer; a JSON ping (the
// protocol of agents before the session layer, which hosts still send
// first) gets its old one-line answer; everything else is dropped. Only the
// newest nonce counts for the host: when an attempt times out it sends a new
// one, and a guest that had started a session on an old nonce sees the new
// attempt as garbage, drops back to scanning and answers the new one. Both
// sides send yamux keepalives, so a vanished peer ends the session and the
// next use syncs anew: the session survives daemon restarts, agent restarts
// and guest reboots. A scanning agent answers any other line with
// "BANGER-NOSESSION": a host whose session outlived the agent's (the agent
// restarted) learns it on its next stream request, as its multiplexer
// chokes on that line, rather than when its keepalive times out.

// SessionVersion is the version of the session layer in the sync lines.
const SessionVersion = 1

const (
	syncPrefix   = "BANGER-SYNC "
	syncedPrefix = "BANGER-SYNCED "
	// noSessionLine is what a scanning agent answers to a line that is
	// neither a sync nor a ping.
	noSessionLine = "BANGER-NOSESSION\n"
)

// maxHeaderBytes bounds a stream's request and response header lines.
const maxHeaderBytes = 1 << 20

// headerTimeout bounds reading a stream's header on either side.
const headerTimeout = 30 * time.Second

// Error codes of a refused stream (Response.Code).
const (
	// CodeUnknownOp: the agent has no handler for the op (an older agent).
	CodeUnknownOp = "unknown_op"
	// CodeInvalid: the params do not fit the op.
	CodeInvalid = "invalid"
	// CodeNotFound: the op names something that does not exist (a path).
	CodeNotFound = "not_found"
	// CodeFailed: anything else.
	CodeFailed = "failed"
)

// ErrUnknownOpCode is matched (errors.Is) by a *RemoteError whose Code is
// CodeUnknownOp: the guest's agent predates the operation.
var ErrUnknownOpCode = errors.New("the guest agent does not know this operation")

// ErrNotFoundCode is matched by a *RemoteError whose Code is CodeNotFound.
var ErrNotFoundCode = errors.New("not found in the guest")

// RemoteError is a stream the guest refused: its code and message.
type RemoteError struct {
	Op      string
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrUnknownOpCode) and ErrNotFoundCode work.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrUnknownOpCode:
		return e.Code == CodeUnknownOp
	case ErrNotFoundCode:
		return e.Code == CodeNotFound
	}
	return false
}

// StreamRequest is the header line the host writes on a new stream.
type StreamRequest struct {
	Op     string          `json:"op"`
	Params json.RawMessage `json:"params,omitempty"`
}

// StreamResponse is the header line the guest answers with.
type StreamResponse struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Code   string          `json:"code,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Keepalive timing (variables for tests).
var (
	keepAliveInterval = 10 * time.Second
	keepAliveTimeout  = time.Minute
)

// yamuxConfig is the multiplexer's configuration on both sides.
// Keepalives every 10 s, answered within a minute, find a vanished peer in
// at most 70 s. The timeout is long because it also bounds a write to the
// channel: a TCG guest on a busy host, its vCPU starved while it writes a
// copy to disk, went 15 s without reading, and a shorter timeout ended the
// session and the copy with it. A restarted agent is found at once anyway
// (it answers stray requests with BANGER-NOSESSION), and a guest that goes
// away closes the channel. The larger window keeps bulk copies flowing
// over a channel with a long round trip (virtio-serial under TCG).
func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = keepAliveInterval
	c.ConnectionWriteTimeout = keepAliveTimeout
	c.MaxStreamWindowSize = 4 << 20
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.LogOutput = nil
	c.Logger = yamuxLogger{log}
	return c
}

// yamuxLogger sends yamux's log lines to slog at debug level: they are
// expected whenever a peer goes away.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (l yamuxLogger) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l yamuxLogger) Println(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

// bufConn is a connection whose reads go through a bufio.Reader that may
// already hold bytes read from it (read while scanning for the sync line).
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite ends this side's direction. A yamux stream's Close is a
// half-close already (the peer reads end of file, this side can still
// read until the peer closes too), so for a stream it is Close.
func (c *bufConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// bufRWC is bufConn for a channel that is not a net.Conn.
type bufRWC struct {
	io.ReadWriteCloser
	r *bufio.Reader
}

func (c *bufRWC) Read(b []byte) (int, error) { return c.r.Read(b) }

// decodeStrict decodes raw into v, refusing unknown fields and trailing data.
func decodeStrict(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// writeLine writes v as one JSON line.
func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// readHeader reads one JSON header line of at most maxHeaderBytes from br
// into v.
func readHeader(br *bufio.Reader, v any) error {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxHeaderBytes {
			return fmt.Errorf("header longer than %d bytes", maxHeaderBytes)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return json.Unmarshal(line, v)
}

// interruptible wraps a channel the guest keeps across sessions (a
// virtio-serial port) so that closing a session stops its I/O without
// closing the channel: Close interrupts blocked reads and writes through
// deadlines and waits until none is in progress. Reset makes it usable
// again for the next session.
type interruptible struct {
	conn   deadlineConn
	mu     sync.Mutex
	closed bool
	rmu    sync.Mutex // held during a Read
	wmu    sync.Mutex // held during a Write
}

// deadlineConn is a channel with deadlines: a net.Conn, a pollable *os.File.
type deadlineConn interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func (c *interruptible) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *interruptible) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	return c.conn.Read(b)
}

func (c *interruptible) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	return c.conn.Write(b)
}

// Close interrupts the I/O in progress and refuses further I/O until
// reset. It does not close the underlying channel.
func (c *interruptible) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	_ = c.conn.SetReadDeadline(aLongTimeAgo)
	_ = c.conn.SetWriteDeadline(aLongTimeAgo)
	c.rmu.Lock()
	c.wmu.Lock()
	_ = c.conn.SetReadDeadline(time.Time{})
	_ = c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	c.rmu.Unlock()
	return nil
}

func (c *interruptible) LocalAddr() net.Addr                { return pipeAddr{} }
func (c *interruptible) RemoteAddr() net.Addr               { return pipeAddr{} }
func (c *interruptible) SetDeadline(t time.Time) error      { return nil }
func (c *interruptible) SetReadDeadline(t time.Time) error  { return nil }
func (c *interruptible) SetWriteDeadline(t time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "agent" }
func (pipeAddr) String() string  { return "agent" }
