package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientTalksOnlyRPC: the CLI reaches banger's state only through the
// daemon, so it must not link the database driver (or the store above it).
func TestClientTalksOnlyRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "sqlite") || dep == "github.com/bangerhq/banger/internal/store" {
			t.Errorf("banger links %s: the CLI must ask bangerd over RPC instead of reading its database", dep)
		}
	}
}
