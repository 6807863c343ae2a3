package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// TestMain runs the virtiofsd stage StartVirtiofsd re-executes this
// binary as (see mounts.Main).
func TestMain(m *testing.M) {
	mounts.Main()
	os.Exit(m.Run())
}

// TestDriverShare starts a real QEMU with a shared folder owned by another
// user: QEMU's vhost-user-fs device completes its handshake with virtiofsd
// over the descriptor Start passed (QMP answers only once the device is
// realized), virtiofsd runs as the folder's owner, no socket is left in
// the VM folder, and virtiofsd exits with QEMU.
func TestDriverShare(t *testing.T) {
	qemuBinary(t)
	testhost.NeedRoot(t, "virtiofsd runs as the folder's owner, another user")
	if err := mounts.CheckVirtiofsd(); err != nil {
		testhost.Skip(t, "%v", err)
	}
	spec := testSpec(t, "share")
	share := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 4242, 4343
	if err := os.Chown(share, uid, gid); err != nil {
		t.Fatal(err)
	}
	spec.Shares = []vmm.Share{{Tag: mounts.Tag(0), HostDir: share, UID: uid, GID: gid}}
	log, _ := vmmtest.Logger(t)
	d := New("", log)
	st, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	argv := strings.Join(st.Argv, " ")
	for _, want := range []string{"memory-backend-memfd,id=mem,size=256M,share=on", "virtio-mmio.force-legacy=false", "vhost-user-fs-device,chardev=fs0,tag=banger0"} {
		if !strings.Contains(argv, want) {
			t.Errorf("argv lacks %q: %s", want, argv)
		}
	}
	vmmtest.AssertConfined(t, st, spec.RunAs, true)
	if _, err := os.Lstat(ShareSocket(spec.Dir, 0)); !os.IsNotExist(err) {
		t.Errorf("share socket left in the VM folder: %v", err)
	}
	pid := virtiofsdPID(t, st)
	status := vmmtest.Status(t, pid)
	if !strings.HasPrefix(status["Uid"], "4242\t") || !strings.HasPrefix(status["Gid"], "4343\t") {
		t.Errorf("virtiofsd runs as uid %q gid %q, want the folder's owner 4242/4343", status["Uid"], status["Gid"])
	}
	waitConsole(t, spec.ConsoleLog, 0, "Run /init as init process", 60*time.Second)
	if err := d.Stop(context.Background(), st, true, 0); err != nil {
		t.Fatal(err)
	}
	vmmtest.AssertStopped(t, d, st)
	deadline := time.Now().Add(10 * time.Second)
	for processRuns(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("virtiofsd %d still runs 10 s after its QEMU exited", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// virtiofsdPID is the pid the State's notes give for share 0's virtiofsd,
// once it runs virtiofsd (not the stage before it).
func virtiofsdPID(t *testing.T, st vmm.State) int {
	t.Helper()
	for _, n := range st.Notes {
		if rest, ok := strings.CutPrefix(n, "share 0: virtiofsd pid "); ok {
			pid, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("no virtiofsd in the state's notes: %q", st.Notes)
	return 0
}

// processRuns reports whether pid is a process that is not a zombie.
func processRuns(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
