package portfwd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/agent"
)

// Op is the agent operation: one connection (TCP) or one client's
// datagrams (UDP) to a port of the guest's 127.0.0.1.
const Op = "forward"

// Params are Op's parameters.
type Params struct {
	Proto string `json:"proto"` // "tcp" or "udp"
	Port  uint16 `json:"port"`
}

// MaxDatagram is the largest UDP datagram a frame carries.
const MaxDatagram = 65535

// udpIdle ends a UDP forward stream whose guest side got no datagram for
// that long (and the host ends one whose client sent none).
var udpIdle = 2 * time.Minute

// Handler is the guest agent's handler for Op. It connects to
// 127.0.0.1:PORT and refuses the stream (CodeNotFound) when nothing
// listens there, so the host can close its client's connection at once.
func Handler(ctx context.Context, st *agent.Stream) error {
	var p Params
	if err := st.Decode(&p); err != nil {
		return err
	}
	if p.Port == 0 || (p.Proto != "tcp" && p.Proto != "udp") {
		return agent.Errorf(agent.CodeInvalid, "forward: want proto tcp or udp and a port from 1 to 65535, got %q %d", p.Proto, p.Port)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.Port)))
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := d.DialContext(dctx, p.Proto, addr)
	cancel()
	if err != nil {
		return agent.Errorf(agent.CodeNotFound, "forward: connect to %s/%s in the guest: %v", addr, p.Proto, err)
	}
	defer c.Close()
	if err := st.Accept(nil); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close(); st.Close() })
	defer stop()
	if p.Proto == "tcp" {
		return Splice(st, c)
	}
	return relayDatagrams(st, c)
}

// Splice copies bytes both ways between a and b until both directions
// ended, passing each end of file on as a half-close (CloseWrite where the
// connection has one). It returns the first error other than the end of
// a direction.
func Splice(a, b net.Conn) error {
	var wg sync.WaitGroup
	var errA error
	wg.Go(func() {
		_, errA = io.Copy(a, b)
		closeWrite(a)
	})
	_, errB := io.Copy(b, a)
	closeWrite(b)
	if errB != nil {
		// a broke: the other copy may wait on b for ever.
		a.Close()
		b.Close()
	}
	wg.Wait()
	return ignoreClosed(errors.Join(errA, errB))
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// relayDatagrams moves frames from st to the connected UDP socket c as
// datagrams, and c's datagrams back as frames, until st ends or c is idle
// for udpIdle.
func relayDatagrams(st io.ReadWriteCloser, c net.Conn) error {
	errc := make(chan error, 2)
	go func() {
		buf := make([]byte, MaxDatagram)
		for {
			c.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := c.Read(buf)
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue // an earlier datagram found no listener
			}
			if err != nil {
				errc <- err
				return
			}
			if err := WriteFrame(st, buf[:n]); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, MaxDatagram)
		for {
			n, err := ReadFrame(st, buf)
			if err != nil {
				errc <- err
				return
			}
			if _, err := c.Write(buf[:n]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				errc <- err
				return
			}
		}
	}()
	err := <-errc
	c.Close()
	st.Close()
	<-errc
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return ignoreClosed(err)
}

// WriteFrame writes one datagram as a frame.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes exceeds %d", len(b), MaxDatagram)
	}
	frame := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(frame, uint16(len(b)))
	copy(frame[2:], b)
	_, err := w.Write(frame)
	return err
}

// ReadFrame reads one frame's datagram into buf (MaxDatagram bytes) and
// returns its length.
func ReadFrame(r io.Reader, buf []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}
