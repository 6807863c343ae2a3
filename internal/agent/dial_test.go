package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
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

// fakeFirecracker speaks the host side of Firecracker's hybrid vsock: it
// reads "CONNECT <port>\n" and, when the port is the agent's, answers with
// answer and then serves the agent protocol on the same connection.
func fakeFirecracker(t *testing.T, answer string, gotCmd chan<- string) func(net.Conn) {
	return func(c net.Conn) {
		// Byte by byte, as Firecracker's 32-byte command buffer would.
		var cmd []byte
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if b[0] == '\n' {
				break
			}
			cmd = append(cmd, b[0])
		}
		if gotCmd != nil {
			gotCmd <- string(cmd)
		}
		if string(cmd) != "CONNECT 1024" {
			return // nothing listens: close without OK
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		Serve(context.Background(), c, fixedInfo)
	}
}

func TestDialHybridVsock(t *testing.T) {
	gotCmd := make(chan string, 1)
	// The OK line and the first bytes from the guest arrive in one write:
	// the dialer must not swallow what follows OK.
	path := listenUnix(t, fakeFirecracker(t, "OK 1073741824\nhello from the guest\n", gotCmd))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialHybridVsock(ctx, path, Port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cmd := <-gotCmd; cmd != "CONNECT 1024" {
		t.Fatalf("sent %q", cmd)
	}
	line, err := bufio.NewReader(io.LimitReader(c, int64(len("hello from the guest\n")))).ReadString('\n')
	if err != nil || line != "hello from the guest\n" {
		t.Fatalf("bytes after OK: %q, %v", line, err)
	}
	r, _, err := Ping(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Hostname != "dev" {
		t.Fatalf("reply %+v", r)
	}
}

func TestDialHybridVsockErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		port    uint32
		answer  string
		handler func(net.Conn) // overrides the fake Firecracker
		want    string
		wantIs  error
	}{
		{name: "nothing listens", port: 5000, want: "closed without OK"},
		{name: "not OK", port: Port, answer: "NOPE\n", want: `unexpected answer to CONNECT: "NOPE"`},
		{name: "bad host port", port: Port, answer: "OK banana\n", want: "bad host port"},
		{name: "no newline", port: Port, answer: "OK 10", handler: func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "OK 10")
		}, want: "without a newline"},
		{name: "endless answer", port: Port, handler: func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, strings.Repeat("O", 1000))
			time.Sleep(time.Second)
		}, want: "longer than 64 bytes"},
		{name: "never answers", port: Port, handler: func(c net.Conn) {
			time.Sleep(2 * time.Second)
		}, wantIs: context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.handler
			if h == nil {
				h = fakeFirecracker(t, tc.answer, nil)
			}
			path := listenUnix(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			c, err := DialHybridVsock(ctx, path, tc.port)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v does not name the socket", err)
			}
		})
	}
}

func TestDialVirtioSerial(t *testing.T) {
	path := listenUnix(t, func(c net.Conn) {
		// QEMU hands over whatever the guest wrote while no client was
		// connected: a stale reply comes first.
		io.WriteString(c, `{"id":"from-last-session","ok":true}`+"\n")
		Serve(context.Background(), c, fixedInfo)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialVirtioSerial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, _, err := Ping(ctx, c)
	if err != nil || !r.OK {
		t.Fatalf("ping: %+v, %v", r, err)
	}
}

func TestDialBadPaths(t *testing.T) {
	long := "/" + strings.Repeat("d", 120) + "/agent.sock"
	ctx := context.Background()
	if _, err := DialVirtioSerial(ctx, long); err == nil || !strings.Contains(err.Error(), "more than the 108") {
		t.Errorf("long path: %v", err)
	}
	if _, err := DialHybridVsock(ctx, long, Port); err == nil || !strings.Contains(err.Error(), "more than the 108") {
		t.Errorf("long path: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.sock")
	if _, err := DialVirtioSerial(ctx, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing socket: %v", err)
	}
	if _, err := DialHybridVsock(ctx, missing, Port); err == nil || !strings.Contains(err.Error(), "port 1024") {
		t.Errorf("missing socket: %v", err)
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
	c, err := DialVirtioSerial(context.Background(), path)
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
