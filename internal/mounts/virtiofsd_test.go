package mounts

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestMain(m *testing.M) {
	Main()
	os.Exit(m.Run())
}

// TestVirtiofsdLifecycle starts the real virtiofsd as StartVirtiofsd
// does, for a folder owned by another user: it runs as that user on the
// host (its uid in /proc), waits for QEMU on the socket, and exits when
// the connection closes, as it does when the VM's QEMU exits.
func TestVirtiofsdLifecycle(t *testing.T) {
	testhost.NeedRoot(t, "virtiofsd runs as the folder's owner, another user")
	if _, err := os.Stat(VirtiofsdBinary); err != nil {
		testhost.Skip(t, "no %s (Debian's qemu-system-common): %v", VirtiofsdBinary, err)
	}
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	os.Mkdir(share, 0o755)
	const uid, gid = 4242, 4343
	if err := os.Chown(share, uid, gid); err != nil {
		t.Fatal(err)
	}
	owner, err := FolderOwner(share, 0)
	if err != nil || owner != (Owner{uid, gid}) {
		t.Fatalf("FolderOwner: %v %v", owner, err)
	}
	if _, err := FolderOwner(share, 1000); err == nil || !strings.Contains(err.Error(), "belongs to uid 4242") {
		t.Fatalf("FolderOwner for an unprivileged daemon of another uid: %v", err)
	}
	sock := filepath.Join(dir, "vfs.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	lf, _ := ln.File()
	ln.Close()
	out, _ := os.Create(filepath.Join(dir, "virtiofsd.log"))
	p, err := StartVirtiofsd(VirtiofsdBinary, Spec{HostDir: share, GuestDir: "/s", ReadOnly: true}, owner, lf, out)
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Running, as the folder's owner on the host.
	var status string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/status")
		status = string(b)
		if strings.Contains(status, "Name:\tvirtiofsd") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(status, "Name:\tvirtiofsd") || !strings.Contains(status, "\nUid:\t4242\t4242\t4242\t4242") {
		log, _ := os.ReadFile(out.Name())
		t.Fatalf("virtiofsd is not running as uid 4242:\n%s\nlog:\n%s", status, log)
	}
	if strings.Contains(status, "\nGroups:\t0") {
		t.Errorf("virtiofsd kept the daemon's supplementary groups:\n%s", status)
	}
	// The connection closes: virtiofsd exits.
	c.Close()
	deadline = time.Now().Add(10 * time.Second)
	for syscall.Kill(p.Pid, 0) == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/status"); strings.Contains(string(b), "State:\tZ") {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("virtiofsd still runs 10 s after its client left; log:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
