package qemu

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

func TestDialAgent(t *testing.T) {
	d := New("", nil)
	path := testhost.ServeUnix(t, func(c net.Conn) {
		// QEMU hands over whatever the guest wrote while no client was
		// connected: a stale reply comes first, which the ping skips.
		io.WriteString(c, `{"id":"from-last-session","ok":true}`+"\n")
		vmmtest.ServeAgent(c)
	})
	vmmtest.AssertDialAgent(t, d, vmm.State{Driver: "qemu", AgentSocket: path}, "virtio-serial")
	ctx := context.Background()
	missing := path + ".nope"
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
