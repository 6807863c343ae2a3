package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// ErrNotOK is wrapped by Ping's error when the agent answered but its reply
// has ok=false: the guest is up and the agent alive, yet it could not answer
// the ping (the reply's Error says why).
var ErrNotOK = errors.New("agent replied with an error")

// Conn is the part of a connection that Ping needs. Any net.Conn is one, and
// so is a pollable *os.File.
type Conn interface {
	io.ReadWriter
	SetDeadline(t time.Time) error
}

// Ping sends one ping with a fresh random id over conn and waits for the reply
// that carries that id. Lines with other ids (replies meant for an earlier
// session on the same virtio-serial port), garbage and over-long lines are
// read and discarded. The request is preceded by an empty line so that a
// partial line an earlier session left in the guest's buffer cannot corrupt
// it.
//
// ctx bounds the whole exchange through conn's deadline: Ping replaces any
// deadline the caller set and clears it before returning. Without a deadline
// or cancellation in ctx, Ping waits as long as the guest takes. When ctx
// ends first, the error wraps context.DeadlineExceeded or context.Canceled.
//
// rtt is the time from sending the request to reading its reply. On an ok=false
// reply Ping returns the reply, rtt and an error wrapping ErrNotOK. Ping reads
// through a buffer: bytes that arrive after the matching reply are lost, which
// is harmless because the agent sends nothing unasked.
func Ping(ctx context.Context, conn Conn) (reply Reply, rtt time.Duration, err error) {
	id, err := newID()
	if err != nil {
		return Reply{}, 0, fmt.Errorf("ping agent: %w", err)
	}
	req, err := json.Marshal(Request{Op: OpPing, ID: id})
	if err != nil {
		return Reply{}, 0, fmt.Errorf("ping agent: encode request: %w", err)
	}
	msg := make([]byte, 0, len(req)+2)
	msg = append(msg, '\n')
	msg = append(msg, req...)
	msg = append(msg, '\n')

	release := bindDeadline(ctx, conn)
	defer release()

	start := time.Now()
	if _, err := conn.Write(msg); err != nil {
		return Reply{}, 0, fmt.Errorf("ping agent: send request: %w", ctxError(ctx, err))
	}
	br := bufio.NewReaderSize(conn, MaxLineBytes)
	for {
		line, tooLong, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Reply{}, 0, fmt.Errorf("ping agent: connection closed before the reply: %w", io.ErrUnexpectedEOF)
			}
			return Reply{}, 0, fmt.Errorf("ping agent: no reply: %w", ctxError(ctx, err))
		}
		if tooLong {
			continue
		}
		var r Reply
		if json.Unmarshal(line, &r) != nil || r.ID != id {
			continue
		}
		rtt := time.Since(start)
		if !r.OK {
			return r, rtt, fmt.Errorf("ping agent: %w: %s", ErrNotOK, r.Error)
		}
		return r, rtt, nil
	}
}

// newID returns a random 128-bit id in hex.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make request id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// deadliner is a connection with a single read-and-write deadline.
type deadliner interface{ SetDeadline(time.Time) error }

// bindDeadline applies ctx's deadline to conn and interrupts conn's blocked
// I/O when ctx is cancelled, until release is called; release waits for a
// concurrent interruption to finish and then clears conn's deadline.
func bindDeadline(ctx context.Context, conn deadliner) (release func()) {
	d, _ := ctx.Deadline() // zero when ctx has none: no deadline
	_ = conn.SetDeadline(d)
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = conn.SetDeadline(aLongTimeAgo)
	})
	return func() {
		if !stop() {
			<-done
		}
		_ = conn.SetDeadline(time.Time{})
	}
}

// ctxError maps an I/O error caused by bindDeadline back to ctx's error, so
// callers can test for context.DeadlineExceeded and context.Canceled.
func ctxError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline came from ctx and fired a moment before ctx's
		// own timer did.
		return context.DeadlineExceeded
	}
	return err
}
