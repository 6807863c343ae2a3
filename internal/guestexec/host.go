package guestexec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// ErrLost is wrapped by Run's error when the stream ends before the exit
// status (the guest or the daemon went away).
var ErrLost = errors.New("the connection to the guest ended before the command did")

// Streams are the host's ends of a command's input and output.
type Streams struct {
	// Stdin is copied to the command (when Params.Stdin); nil: none. Its
	// end is sent as end of input.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output. With a TTY the
	// terminal's output all comes as stdout.
	Stdout, Stderr io.Writer
	// Resize carries new window sizes (rows, cols); nil: none.
	Resize <-chan [2]uint16
	// Signals carries signals to deliver to the command (to its process
	// group); nil: none.
	Signals <-chan syscall.Signal
	// OnError gets the message of a FrameError (the command could not
	// start); nil: it goes to Stderr.
	OnError func(msg string)
}

// Run serves an accepted exec stream (rw) until the command's exit
// status arrives, and returns it. Writes to rw come from several
// goroutines, serialised per frame. It returns an error wrapping ErrLost
// when rw ends first. It does not close rw.
func Run(rw io.ReadWriter, s Streams) (int, error) {
	fw := &frameWriter{w: rw}
	done := make(chan struct{})
	defer close(done)
	if s.Stdin != nil {
		go func() {
			_, err := io.Copy(streamWriter{fw, FrameStdin}, s.Stdin)
			if err == nil {
				_ = fw.write(FrameStdin, nil)
			}
		}()
	}
	if s.Resize != nil || s.Signals != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case sz := <-s.Resize:
					_ = fw.write(FrameResize, u16pair(sz[0], sz[1]))
				case sig := <-s.Signals:
					_ = fw.write(FrameSignal, []byte{byte(sig)})
				}
			}
		}()
	}
	buf := make([]byte, MaxPayload)
	for {
		typ, payload, err := readFrame(rw, buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, ErrLost
			}
			return 0, fmt.Errorf("%w: %w", ErrLost, err)
		}
		switch typ {
		case FrameStdout:
			if _, err := s.Stdout.Write(payload); err != nil {
				return 0, fmt.Errorf("write the command's output: %w", err)
			}
		case FrameStderr:
			if _, err := s.Stderr.Write(payload); err != nil {
				return 0, fmt.Errorf("write the command's errors: %w", err)
			}
		case FrameError:
			if s.OnError != nil {
				s.OnError(string(payload))
			} else {
				fmt.Fprintln(s.Stderr, string(payload))
			}
		case FrameExit:
			if len(payload) != 4 {
				return 0, fmt.Errorf("exit frame of %d bytes", len(payload))
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		default:
			// Unknown frames from a newer agent are skipped.
		}
	}
}
