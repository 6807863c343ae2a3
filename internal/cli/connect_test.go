package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
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
