package network

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenTAP(t *testing.T) {
	h, nl, _ := testHost(t)
	if err := h.EnsureBridge(testBridge, GatewayPrefix(testSubnet)); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if _, err := h.OpenTAP(testTAP); err == nil || !strings.Contains(err.Error(), "no such TAP device") {
		t.Fatalf("OpenTAP of a missing device: %v", err)
	}
	if l, _ := h.linkByName(testTAP); l != nil {
		t.Fatal("OpenTAP of a missing name made a device")
	}
	if _, err := h.OpenTAP(testBridge); err == nil {
		t.Fatal("OpenTAP of a bridge succeeded")
	}
	// Owned by another user: root (CAP_NET_ADMIN) attaches anyway.
	if err := h.CreateTAP(testTAP, testBridge, testUID, testGID); err != nil {
		t.Fatalf("CreateTAP: %v", err)
	}
	f, err := h.OpenTAP(testTAP)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil {
		t.Fatalf("TUNGETIFF: %v", err)
	}
	if ifr.Name() != testTAP || ifr.Uint16()&tapFlags != tapFlags {
		t.Errorf("descriptor attached to %q with flags %#x, want %q with %#x", ifr.Name(), ifr.Uint16(), testTAP, tapFlags)
	}
	f.Close()
	// The device outlives the descriptor, still on the bridge.
	if l := mustLink(t, nl, testTAP); l.Attrs().MasterIndex == 0 {
		t.Error("TAP left the bridge")
	}
}
