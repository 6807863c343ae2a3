package vmmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/testhost"
)

var tapCount atomic.Int32

// TAP creates a persistent TAP device owned by uid (as the daemon creates
// one for a VMM that opens it by name) and removes it when the test ends.
// It is never brought up, so it carries no traffic. It needs root.
func TAP(t *testing.T, uid int) string {
	t.Helper()
	testhost.NeedRoot(t, "creating a TAP device needs CAP_NET_ADMIN")
	name := fmt.Sprintf("fctap%d-%d", os.Getpid()%100000, tapCount.Add(1))
	if err := network.CreateDetachedTAP(name, uid, -1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := network.DeleteLink(name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// DevTUN returns a TUN clone device node (char 10:200, like /dev/net/tun)
// that anyone may open, in a folder of its own: the host's /dev/net/tun
// may be closed to the VMM user, and a VMM that opens TAPs by name
// (Firecracker, its simulator) needs one it can open. It needs root.
func DevTUN(t *testing.T) string {
	t.Helper()
	testhost.NeedRoot(t, "making a device node needs CAP_MKNOD")
	dir, err := os.MkdirTemp("", "devtun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "tun")
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatalf("mknod %s: %v", p, err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	return p
}
