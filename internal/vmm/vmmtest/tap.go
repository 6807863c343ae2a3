package vmmtest

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

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
