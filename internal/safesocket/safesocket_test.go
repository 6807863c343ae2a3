package safesocket

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shortDir is a temporary directory with a path short enough for sockets
// (t.TempDir's can exceed the 107-byte limit).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr-ss-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// staleSocket leaves a socket file at p that nothing listens on.
func staleSocket(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// liveSocket serves p until the test ends.
func liveSocket(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go acceptAll(l)
}

// acceptAll accepts and closes connections until l is closed.
func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func TestClearStale(t *testing.T) {
	dir := shortDir(t)

	if err := ClearStale(filepath.Join(dir, "missing.sock"), "x"); err != nil {
		t.Errorf("missing socket: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	staleSocket(t, stale)
	if err := ClearStale(stale, "x"); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale socket still there: %v", err)
	}

	live := filepath.Join(dir, "live.sock")
	liveSocket(t, live)
	err := ClearStale(live, "an earlier qemu of this VM")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "an earlier qemu of this VM") {
		t.Errorf("live socket: err = %v, want ErrInUse naming the owner", err)
	}
	if _, err := os.Lstat(live); err != nil {
		t.Errorf("live socket removed: %v", err)
	}

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if err := ClearStale(file, "x"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: err = %v, want 'not a socket'", err)
	}
	if _, err := os.Lstat(file); err != nil {
		t.Errorf("regular file removed: %v", err)
	}
}

func TestListen(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "d.sock")
	staleSocket(t, p)
	ln, err := Listen(p, "bangerd")
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	go acceptAll(ln)
	if _, err := Listen(p, "another bangerd"); !errors.Is(err, ErrInUse) {
		t.Errorf("second listen on a live socket: err = %v, want ErrInUse", err)
	}
	ln.Close()
	if _, err := os.Lstat(p); err != nil {
		t.Errorf("closing the listener removed the socket (the caller owns that): %v", err)
	}

	long := filepath.Join(dir, strings.Repeat("x", 120)+".sock")
	if _, err := Listen(long, "x"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("over-long path: err = %v, want the path limit", err)
	}
}
