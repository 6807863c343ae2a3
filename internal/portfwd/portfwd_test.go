package portfwd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/agent/agenttest"
	"github.com/bangerhq/banger/internal/testhost"
)

func TestParseSpec(t *testing.T) {
	good := map[string]string{
		"8080:80":               "127.0.0.1:8080:80/tcp",
		"8080:80/tcp":           "127.0.0.1:8080:80/tcp",
		"5353:53/udp":           "127.0.0.1:5353:53/udp",
		"0.0.0.0:8080:80":       "0.0.0.0:8080:80/tcp",
		"192.0.2.1:1:65535/udp": "192.0.2.1:1:65535/udp",
		"[::1]:8080:80":         "[::1]:8080:80/tcp",
		"[::]:8080:80/udp":      "[::]:8080:80/udp",
	}
	for in, want := range good {
		s, err := ParseSpec(in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", in, err)
			continue
		}
		if s.String() != want {
			t.Errorf("ParseSpec(%q) = %s, want %s", in, s, want)
		}
		// The canonical form reads back to the same spec.
		if back, err := ParseSpec(s.String()); err != nil || back != s {
			t.Errorf("ParseSpec(%q) = %v %v, want %v", s.String(), back, err, s)
		}
	}
	bad := []string{"", "8080", "8080:", ":80", "0:80", "8080:0", "70000:80", "8080:80/sctp", "8080:80/",
		"x:8080:80", "::1:8080:80", "[::1:8080:80", "a:b", "8080:80:90:100", "224.0.0.1:8080:80", "[fe80::1%eth0]:1:2", "-1:80"}
	for _, in := range bad {
		if s, err := ParseSpec(in); err == nil {
			t.Errorf("ParseSpec(%q) = %v, want an error", in, s)
		} else if !bytes.Contains([]byte(err.Error()), []byte("HOST_PORT:GUEST_PORT")) {
			t.Errorf("ParseSpec(%q): %v does not show the form", in, err)
		}
	}
}

// dialer is a Dialer over a real in-process agent session.
func dialer(t *testing.T) Dialer {
	sess := agenttest.Session(t, func(s *agent.Server) { s.Handle(Op, Handler) })
	return func(ctx context.Context, p Params) (net.Conn, error) {
		return sess.Open(ctx, Op, p, nil)
	}
}

// freeSpec is a spec for a host port that was free a moment ago.
func freeSpec(t *testing.T, proto string, guest uint16) Spec {
	t.Helper()
	var port int
	if proto == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return Spec{HostAddr: DefaultHostAddr, HostPort: uint16(port), GuestPort: guest, Proto: proto}
}

// guestTCP is the "guest" service: a TCP server on 127.0.0.1 that echoes
// what it reads, then closes.
func guestTCP(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testhost.Serve(t, ln, func(c net.Conn) { io.Copy(c, c) })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestForwardTCP(t *testing.T) {
	m := NewManager(slog.New(slog.DiscardHandler))
	defer m.CloseAll()
	s := freeSpec(t, "tcp", guestTCP(t))
	if err := m.Open("vm1", s, dialer(t)); err != nil {
		t.Fatal(err)
	}
	// Binary-safe, both ways, with the half-close passed on: the echo
	// server's copy ends when our write side closes.
	data := make([]byte, 1<<20)
	rand.Read(data)
	c, err := net.Dial("tcp", s.HostAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo through the forward: %d bytes back of %d, %v", len(got), len(data), err)
	}
	// A taken port is a clear error, and a second Open of the same spec is
	// nothing.
	if err := m.Open("vm1", s, dialer(t)); err != nil {
		t.Fatalf("open again: %v", err)
	}
	var taken *TakenError
	if err := CheckFree(s); !errors.As(err, &taken) {
		t.Fatalf("CheckFree of a forwarded port: %v, want a TakenError", err)
	}
	m2 := NewManager(slog.New(slog.DiscardHandler))
	if err := m2.Open("vm2", s, dialer(t)); !errors.As(err, &taken) {
		t.Fatalf("open a taken port: %v", err)
	}
	// Closed: the port is free again.
	m.Close("vm1", s)
	if m.IsOpen("vm1", s) {
		t.Fatal("still open after Close")
	}
	if err := CheckFree(s); err != nil {
		t.Fatalf("after Close: %v", err)
	}
}

func TestForwardTCPNothingListens(t *testing.T) {
	m := NewManager(slog.New(slog.DiscardHandler))
	defer m.CloseAll()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	s := freeSpec(t, "tcp", dead)
	if err := m.Open("vm1", s, dialer(t)); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", s.HostAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Fatalf("read from a forward to a closed guest port: %d, %v; want the connection closed", n, err)
	}
}

func TestForwardUDP(t *testing.T) {
	// The guest's UDP service answers each datagram with it reversed.
	svc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := svc.ReadFrom(buf)
			if err != nil {
				return
			}
			r := make([]byte, n)
			for i := range n {
				r[i] = buf[n-1-i]
			}
			svc.WriteTo(r, from)
		}
	}()
	m := NewManager(slog.New(slog.DiscardHandler))
	defer m.CloseAll()
	s := freeSpec(t, "udp", uint16(svc.LocalAddr().(*net.UDPAddr).Port))
	if err := m.Open("vm1", s, dialer(t)); err != nil {
		t.Fatal(err)
	}
	// Two clients, each with its own flow; datagram boundaries kept.
	for _, client := range []string{"a", "b"} {
		c, err := net.Dial("udp", s.HostAddrPort().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, msg := range []string{client + "-hello", client + "-x", client + "-" + string(bytes.Repeat([]byte("z"), 1000))} {
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2000)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("client %s: read: %v", client, err)
			}
			want := []byte(msg)
			for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
				want[i], want[j] = want[j], want[i]
			}
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("client %s: got %q, want %q", client, buf[:n], want)
			}
		}
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	for _, d := range [][]byte{{}, []byte("x"), bytes.Repeat([]byte{7}, MaxDatagram)} {
		if err := WriteFrame(&b, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFrame(&b, make([]byte, MaxDatagram+1)); err == nil {
		t.Fatal("an oversized datagram was framed")
	}
	buf := make([]byte, MaxDatagram)
	for _, want := range []int{0, 1, MaxDatagram} {
		n, err := ReadFrame(&b, buf)
		if err != nil || n != want {
			t.Fatalf("ReadFrame: %d %v, want %d", n, err, want)
		}
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 5, 1}), buf); err == nil {
		t.Fatal("a short frame was read")
	}
}
