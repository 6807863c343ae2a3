package network

// Helpers that confine the host tests to network namespaces they create
// (testhost.NewNetns, testhost.InNetns: no thread of the test process
// stays in one).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

// testLinkPrefix starts the name of every device the tests create, so that
// TestMain can check that none ever appeared in the root namespace.
const testLinkPrefix = "bgrt"

// rootState is what the tests must never change in the namespace the test
// process runs in.
type rootState struct {
	ipForward string
	testLinks []string
	// tables are the nftables tables ("family name") a test of this
	// package could make: the legacy table and those of test bridges.
	// Other bridges' tables belong to daemons on this host (an end-to-end
	// test's, run at the same time), which add and remove them at will.
	tables []string
}

func snapshotRoot() (rootState, error) {
	var s rootState
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return s, err
	}
	s.ipForward = strings.TrimSpace(string(b))
	links, err := netlink.LinkList()
	if err != nil {
		return s, err
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, testLinkPrefix) {
			s.testLinks = append(s.testLinks, l.Attrs().Name)
		}
	}
	c, err := nftables.New()
	if err != nil {
		return s, err
	}
	tables, err := c.ListTables()
	if err != nil {
		return s, err
	}
	for _, t := range tables {
		if t.Name == legacyNATTable || strings.HasPrefix(t.Name, TableName(testLinkPrefix)) {
			s.tables = append(s.tables, fmt.Sprintf("%d %s", t.Family, t.Name))
		}
	}
	return s, nil
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	before, err := snapshotRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "snapshot root network namespace: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := snapshotRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "snapshot root network namespace: %v\n", err)
		os.Exit(1)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		fmt.Fprintf(os.Stderr, "FAIL: the tests changed the root network namespace: before %+v, after %+v\n", before, after)
		code = 1
	}
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testhost.Skip(t, "this test needs root to create a network namespace and devices in it; run `sudo go test ./internal/network/`")
	}
}

// testHost returns a Host bound to a fresh namespace, and a netlink handle
// on it for the test's own checks.
func testHost(t *testing.T) (*Host, *netlink.Handle, netns.NsHandle) {
	t.Helper()
	requireRoot(t)
	ns := testhost.NewNetns(t)
	h, err := NewAt(ns)
	if err != nil {
		t.Fatalf("NewAt: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in test namespace: %v", err)
	}
	t.Cleanup(nl.Close)
	return h, nl, ns
}

// nsCommand runs a command inside ns with nsenter and returns its output. It
// skips the test when nsenter (util-linux) is missing.
func nsCommand(t *testing.T, ns netns.NsHandle, args ...string) (string, error) {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		testhost.Skip(t, "nsenter (util-linux) is not installed")
	}
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("dup namespace handle: %v", err)
	}
	f := os.NewFile(uintptr(fd), "netns")
	defer f.Close()
	cmd := exec.Command(nsenter, append([]string{"--net=/proc/self/fd/3", "--"}, args...)...)
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// sysfsAttr reads /sys/class/net/DEV/ATTR as seen from inside ns. The
// process's own /sys shows the root namespace's devices, so it mounts a
// fresh sysfs in a private mount namespace, as `ip netns exec` does.
func sysfsAttr(t *testing.T, ns netns.NsHandle, dev, attr string) string {
	t.Helper()
	out, err := nsCommand(t, ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t sysfs sysfs /sys && cat "/sys/class/net/$0/$1"`, dev, attr)
	if err != nil {
		t.Fatalf("read /sys/class/net/%s/%s in test namespace: %v: %s", dev, attr, err, out)
	}
	return strings.TrimSpace(out)
}
