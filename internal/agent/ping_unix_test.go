package agent

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// listenUnix listens on a fresh Unix socket and runs handle on every
// connection until the test ends.
func listenUnix(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return path
}

// TestPingStaleReply pings over a Unix socket as the host side of QEMU's
// virtio-serial port looks.
func TestPingStaleReply(t *testing.T) {
	path := listenUnix(t, func(c net.Conn) {
		// QEMU hands over whatever the guest wrote while no client was
		// connected: a stale reply comes first.
		io.WriteString(c, `{"id":"from-last-session","ok":true}`+"\n")
		Serve(context.Background(), c, fixedInfo)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, _, err := Ping(ctx, c)
	if err != nil || !r.OK {
		t.Fatalf("ping: %+v, %v", r, err)
	}
}

// BenchmarkPingUnix measures one ping round trip over a Unix socket, the
// host side of both transports.
func BenchmarkPingUnix(b *testing.B) {
	path := filepath.Join(b.TempDir(), "a.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		Serve(context.Background(), c, ProcInfo("bench"))
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var total time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, rtt, err := Ping(ctx, c)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		total += rtt
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "rtt-µs/op")
}
