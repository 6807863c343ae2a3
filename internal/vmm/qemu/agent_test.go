package qemu

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/vmm"
)

func TestDialAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		agent.Serve(context.Background(), c, func() (agent.Info, error) { return agent.Info{Hostname: "dev"}, nil })
	}()
	d := New("", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vmm.DialAgent(ctx, d, vmm.State{Driver: "qemu", AgentSocket: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, _, err := agent.Ping(ctx, c); err != nil || !r.OK || r.Hostname != "dev" {
		t.Fatalf("ping = %+v, %v", r, err)
	}
	if ch := vmm.AgentChannel(d); ch != "virtio-serial" {
		t.Errorf("channel %q", ch)
	}
	if _, err := d.DialAgent(ctx, vmm.State{}); !errors.Is(err, vmm.ErrUnsupported) {
		t.Errorf("no agent socket: %v, want ErrUnsupported", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.sock")
	if _, err := d.DialAgent(ctx, vmm.State{AgentSocket: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing socket: %v", err)
	}
	long := "/" + strings.Repeat("d", 120) + "/agent.sock"
	if _, err := d.DialAgent(ctx, vmm.State{AgentSocket: long}); err == nil || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
		t.Errorf("long path: %v", err)
	}
	if vmm.UsesVsock(d) || vmm.PreflightPurpose(d, "vm-start") != "vm-start" {
		t.Error("qemu claims a vsock device or a preflight purpose of its own")
	}
}
