package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// answer reads the CONNECT line and writes s.
func answer(s string) func(net.Conn) {
	return func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, s)
		time.Sleep(time.Second)
	}
}

// TestDialVsockAnswers covers what Firecracker (or something posing as
// it) may answer to CONNECT.
func TestDialVsockAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(net.Conn)
		want   string
		wantIs error
	}{
		{name: "closed without OK", handle: func(c net.Conn) { bufio.NewReader(c).ReadString('\n') }, want: "nothing in the guest listens on port 1024", wantIs: ErrVsockRefused},
		{name: "not OK", handle: answer("NOPE\n"), want: `unexpected answer to CONNECT: "NOPE"`},
		{name: "bad host port", handle: answer("OK banana\n"), want: "bad host port"},
		{name: "no newline", handle: func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "OK 10")
		}, want: `connection closed after "OK 10"`, wantIs: ErrVsockRefused},
		{name: "endless answer", handle: answer(strings.Repeat("O", 1000)), want: "longer than 32 bytes"},
		{name: "never answers", handle: func(net.Conn) { time.Sleep(2 * time.Second) }, wantIs: context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testhost.ServeUnix(t, tc.handle)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			c, err := DialVsock(ctx, path, agent.Port)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v does not name the socket", err)
			}
		})
	}
}

// TestDialAgent reaches an agent behind the hybrid vsock handshake, with
// the guest's first bytes in the same write as OK, and refuses a state
// with a socket path too long for the kernel.
func TestDialAgent(t *testing.T) {
	gotCmd := make(chan string, 1)
	path := testhost.ServeUnix(t, func(c net.Conn) {
		var cmd []byte
		b := make([]byte, 1) // byte by byte, as Firecracker reads
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if b[0] == '\n' {
				break
			}
			cmd = append(cmd, b[0])
		}
		gotCmd <- string(cmd)
		io.WriteString(c, "OK 1073741824\n")
		vmmtest.ServeAgent(c)
	})
	d := New("", nil)
	vmmtest.AssertDialAgent(t, d, vmm.State{Driver: "firecracker", AgentSocket: path}, "vsock")
	if cmd := <-gotCmd; cmd != "CONNECT 1024" {
		t.Fatalf("sent %q", cmd)
	}
	long := "/" + strings.Repeat("d", 120) + "/v.sock"
	if _, err := d.DialAgent(context.Background(), vmm.State{AgentSocket: long}); err == nil || !strings.Contains(err.Error(), "longer than the kernel's limit of 107") {
		t.Errorf("long path: %v", err)
	}
}
