package proc

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestLaunch(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.WriteFile(out, []byte("from an earlier run\n"), 0o600)
	extra, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	c, err := Launch(Command{
		Argv:  []string{"/bin/sh", "-c", `echo "A=$A HOME=$HOME cwd=$PWD fd3=$(readlink /proc/self/fd/3)"; echo oops >&2; exec sleep 30`},
		Files: []*os.File{extra}, Output: out, Env: []string{"A=1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill(time.Second)
	if !Alive(c.PID, c.StartTime) {
		t.Fatal("not alive")
	}
	if sid, _ := unix.Getsid(c.PID); sid != c.PID {
		t.Errorf("not in a session of its own: sid %d", sid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(c.OutputTail(1000), "oops") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tail := c.OutputTail(1000)
	if tail != "A=1 HOME= cwd=/ fd3=/dev/null\noops" {
		t.Errorf("output of this launch = %q", tail)
	}
	if !c.Kill(5 * time.Second) {
		t.Fatal("not reaped after SIGKILL")
	}
	select {
	case <-c.Exited():
	default:
		t.Fatal("Exited not closed after Kill")
	}
	if err := c.ExitError("it was ready"); !strings.Contains(err.Error(), "sh exited before it was ready (signal: killed)") || !strings.Contains(err.Error(), "oops") {
		t.Errorf("ExitError = %v", err)
	}
	if b, _ := os.ReadFile("/proc/" + strconv.Itoa(c.PID) + "/stat"); len(b) > 0 && !Alive(c.PID, c.StartTime) && strings.Contains(string(b), ") Z ") {
		t.Error("left a zombie")
	}

	if _, err := Launch(Command{Argv: []string{filepath.Join(dir, "nope")}, Output: out}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing binary: %v", err)
	}
}

func TestLaunchCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		testhost.Skip(t, "needs root to start a process as another user")
	}
	c, err := Launch(Command{Argv: []string{"/bin/sleep", "30"}, Output: filepath.Join(t.TempDir(), "out"),
		Credential: &syscall.Credential{Uid: 4242, Gid: 4343}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill(time.Second)
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(c.PID) + "/status")
	for _, want := range []string{"Uid:\t4242\t4242\t4242\t4242", "Gid:\t4343\t4343\t4343\t4343", "Groups:\t \n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status lacks %q:\n%s", want, b)
		}
	}
}

// TestLaunchKeepsInheritedDescriptors: a descriptor the launcher did not
// open with close-on-exec (inherited from whoever started the daemon) does
// not reach the VMM.
func TestLaunchKeepsInheritedDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETFD, 0); err != nil { // as if inherited
		t.Fatal(err)
	}
	c, err := Launch(Command{Argv: []string{"/bin/sleep", "30"}, Output: filepath.Join(t.TempDir(), "out")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill(time.Second)
	// Once the test closes its write end, the read end sees EOF unless
	// the VMM holds a copy. (Listing /proc/PID/fd instead races with the
	// child's dynamic loader, which briefly opens libraries as fd 3.)
	w.Close()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from the pipe after closing its write end: %d, %v; want EOF (the vmm pid %d holds the inherited write end)", n, err, c.PID)
	}
}
