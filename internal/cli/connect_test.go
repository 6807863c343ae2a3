package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/version"
)

func TestStaleDaemonDetection(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "bangerd")
	os.WriteFile(exe, []byte("v1"), 0o755)
	// The id as the daemon recorded it at its start.
	same := api.DaemonInfo{Version: version.String(), Executable: exe, ExecutableID: version.ExecutableID(exe)}
	if r := stale(same); r != "" {
		t.Fatalf("same build reported stale: %s", r)
	}
	other := same
	other.Version = "something-else"
	if r := stale(other); !strings.Contains(r, "daemon version something-else") {
		t.Fatalf("other version: %q", r)
	}
	// A rebuilt binary at the daemon's path (same version string, as with
	// a dirty tree) is stale too.
	later := time.Now().Add(time.Minute)
	os.WriteFile(exe, []byte("v2, longer"), 0o755)
	os.Chtimes(exe, later, later)
	if r := stale(same); !strings.Contains(r, "was rebuilt") {
		t.Fatalf("rebuilt binary: %q", r)
	}
}

// TestDaemonInfoFromOldDaemon: a daemon without daemon.info is still seen
// (and found stale) by its build on the answer.
func TestDaemonInfoFromOldDaemon(t *testing.T) {
	info, err := daemonInfo(context.Background(), client.New(testhost.OldDaemon(t)))
	if err != nil || info.Version != "old-1" || info.PID != 99 {
		t.Fatalf("daemonInfo: %+v, %v", info, err)
	}
	if reason := stale(info); !strings.Contains(reason, "daemon version old-1") {
		t.Errorf("stale(%+v) = %q", info, reason)
	}
}

// TestStartDaemonInheritsNothing: a descriptor the CLI inherited (a lock
// its caller holds, as `flock FILE banger ...` passes one) does not reach
// the daemon it starts, which would hold it for its whole life.
func TestStartDaemonInheritsNothing(t *testing.T) {
	bin := t.TempDir()
	out := filepath.Join(bin, "fds")
	os.WriteFile(filepath.Join(bin, "bangerd"), []byte("#!/bin/sh\nls -l /proc/$$/fd > "+out+".tmp; mv "+out+".tmp "+out+"\n"), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	lock := filepath.Join(t.TempDir(), "team.lock")
	os.WriteFile(lock, nil, 0o600)
	fd, err := syscall.Open(lock, syscall.O_RDONLY, 0) // not close-on-exec, as inherited
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	root := t.TempDir()
	dirs := paths.Dirs{Config: filepath.Join(root, "c"), State: filepath.Join(root, "s"), Data: filepath.Join(root, "d"),
		Cache: filepath.Join(root, "k"), Runtime: filepath.Join(root, "r")}
	if err := startDaemon(dirs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(out)
		if err == nil {
			if strings.Contains(string(b), lock) {
				t.Fatalf("the daemon inherited %s:\n%s", lock, b)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in daemon never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
