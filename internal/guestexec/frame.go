// Package guestexec runs a command in a guest through the guest agent: the
// parameters, the frames that carry stdin, stdout, stderr, window sizes,
// signals and the exit status over one agent stream, the guest's handler
// (Handler) and the host's side (Run).
//
// The stream is opened with op "exec" and Params; the guest accepts with
// Result once the command runs (a command that cannot start is accepted
// too, and answered with a FrameError and a FrameExit of 127 or 126, as a
// shell would). Then both directions carry frames: one type byte, a
// big-endian uint32 length, the payload (at most MaxPayload bytes).
//
//	host -> guest: FrameStdin (empty: end of input), FrameResize, FrameSignal
//	guest -> host: FrameStdout, FrameStderr, FrameError, FrameExit (last)
//
// The daemon does not look inside: after vm.exec answers, it copies the
// bytes between the CLI and the agent stream as they are.
package guestexec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Op is the agent operation.
const Op = "exec"

// Frame types.
const (
	FrameStdin  byte = 'i' // payload: input bytes; empty: end of input
	FrameStdout byte = 'o' // payload: output bytes
	FrameStderr byte = 'e'
	FrameResize byte = 'r' // payload: rows, cols as big-endian uint16
	FrameSignal byte = 's' // payload: one byte, the signal number
	FrameError  byte = '!' // payload: a message for the user (the command could not start)
	FrameExit   byte = 'x' // payload: big-endian int32 exit status; the last frame
)

// MaxPayload bounds one frame's payload.
const MaxPayload = 64 << 10

// Params are the exec op's parameters.
type Params struct {
	// Argv is run exactly: Argv[0] is looked up in PATH (the guest's
	// default or the one in Env) when it has no slash; no shell.
	Argv []string `json:"argv"`
	// Env entries (K=V) are added to the guest's base environment and
	// win over it.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty: root's home.
	Dir string `json:"dir,omitempty"`
	// TTY runs the command on a new pseudo-terminal of Rows x Cols, with
	// TERM set to Term.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	Term string `json:"term,omitempty"`
	// Stdin keeps the command's input open for FrameStdin; without it
	// the command reads /dev/null (without TTY) or a terminal nobody
	// types into (with TTY).
	Stdin bool `json:"stdin,omitempty"`
}

// Result is the exec op's result.
type Result struct {
	// PID is the command's process id in the guest; 0 when it could not
	// start.
	PID int `json:"pid"`
}

// Validate checks p for what the guest cannot run.
func (p Params) Validate() error {
	if len(p.Argv) == 0 || p.Argv[0] == "" {
		return errors.New("no command given")
	}
	for _, kv := range p.Env {
		k, _, ok := cutEnv(kv)
		if !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

func cutEnv(kv string) (k, v string, ok bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// ErrFrameTooLarge is returned for a frame longer than MaxPayload.
var ErrFrameTooLarge = errors.New("exec frame longer than the maximum")

// readFrame reads one frame into buf (which must hold MaxPayload bytes).
func readFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], buf[:n], nil
}

// frameWriter writes whole frames from several goroutines.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (fw *frameWriter) write(typ byte, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		n := min(len(payload), MaxPayload)
		var hdr [5]byte
		hdr[0] = typ
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		if _, err := fw.w.Write(append(hdr[:], payload[:n]...)); err != nil {
			return err
		}
		payload = payload[n:]
		if len(payload) == 0 {
			return nil
		}
	}
}

// streamWriter is an io.Writer that sends what it is given as frames of typ.
type streamWriter struct {
	fw  *frameWriter
	typ byte
}

func (s streamWriter) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if err := s.fw.write(s.typ, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func u16pair(a, b uint16) []byte {
	var p [4]byte
	binary.BigEndian.PutUint16(p[:2], a)
	binary.BigEndian.PutUint16(p[2:], b)
	return p[:]
}

func i32(v int32) []byte {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(v))
	return p[:]
}
