package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// replyWriteTimeout bounds writing one reply when the stream supports write
// deadlines. A virtio-serial port blocks guest writes while no host client is
// connected; without a bound a reply to a departed client would wedge the
// agent until the next client shows up and then reach it as a stale line.
const replyWriteTimeout = 2 * time.Second

// aLongTimeAgo is a deadline in the past, used to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

type readDeadliner interface{ SetReadDeadline(time.Time) error }
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// Serve answers requests read from rw until rw reports end of file, an I/O
// error, or ctx is done. Requests are answered one at a time, in order.
// Empty lines, lines that are not a JSON object, and lines longer than
// MaxLineBytes are dropped without a reply; a JSON object whose op is not
// "ping" gets an "unknown op" reply. info is called once per ping.
//
// Serve returns nil at end of file, an error wrapping ctx.Err() when ctx is
// done, and a wrapped I/O error otherwise. To interrupt a blocked read when
// ctx is done, rw must have SetReadDeadline (net.Conn and pollable *os.File
// do); Serve then leaves rw's deadlines in the past. With any other rw the
// caller must close rw to make Serve return. Serve never closes rw.
func Serve(ctx context.Context, rw io.ReadWriter, info InfoFunc) error {
	return serve(ctx, rw, info, 0)
}

// serve is Serve with an idle timeout: when idle > 0 and rw has read
// deadlines, a read that waits longer than idle ends the session with an
// error wrapping os.ErrDeadlineExceeded.
func serve(ctx context.Context, rw io.ReadWriter, info InfoFunc, idle time.Duration) error {
	rd, _ := rw.(readDeadliner)
	wd, _ := rw.(writeDeadliner)
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		if rd != nil {
			_ = rd.SetReadDeadline(aLongTimeAgo)
		}
		if wd != nil {
			_ = wd.SetWriteDeadline(aLongTimeAgo)
		}
	})
	defer func() {
		if !stop() {
			<-done
		}
	}()

	br := bufio.NewReaderSize(rw, MaxLineBytes)
	for {
		if idle > 0 && rd != nil {
			_ = rd.SetReadDeadline(time.Now().Add(idle))
			// Checked after setting the deadline: a cancellation that
			// came earlier would otherwise be overwritten; one that comes
			// later sets its own past deadline after ours.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("serve agent: %w", err)
			}
		}
		line, tooLong, err := readLine(br)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("serve agent: %w", cerr)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("serve agent: read request: %w", err)
		}
		if tooLong {
			continue
		}
		reply, ok := handle(line, info)
		if !ok {
			continue
		}
		b, err := json.Marshal(reply)
		if err != nil {
			return fmt.Errorf("serve agent: encode reply: %w", err)
		}
		b = append(b, '\n')
		if wd != nil && ctx.Err() == nil {
			_ = wd.SetWriteDeadline(time.Now().Add(replyWriteTimeout))
		}
		if _, err := rw.Write(b); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("serve agent: %w", cerr)
			}
			return fmt.Errorf("serve agent: write reply: %w", err)
		}
	}
}

// handle turns one request line into its reply; ok is false when the line
// deserves no reply at all (blank, or not a JSON object).
func handle(line []byte, info InfoFunc) (reply Reply, ok bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Reply{}, false
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Reply{}, false
	}
	if req.Op != OpPing {
		return Reply{ID: req.ID, Error: ErrUnknownOp}, true
	}
	in, err := info()
	if err != nil {
		return Reply{ID: req.ID, Error: err.Error()}, true
	}
	return Reply{
		ID:            req.ID,
		OK:            true,
		Hostname:      in.Hostname,
		UptimeSeconds: in.UptimeSeconds,
		BootID:        in.BootID,
		AgentVersion:  in.AgentVersion,
	}, true
}

// readLine returns the next line from br without its line ending. br must
// have been made with a buffer of MaxLineBytes. A line longer than that is
// consumed through its newline and reported with tooLong set and no bytes.
// A final line without a newline is dropped and the read error returned.
// The returned slice is valid until the next read from br.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case err == nil && tooLong:
			return nil, true, nil
		case err == nil:
			return bytes.TrimSuffix(frag[:len(frag)-1], []byte{'\r'}), false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			tooLong = true
		default:
			return nil, tooLong, err
		}
	}
}
