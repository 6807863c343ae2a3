package version

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestExecutableID(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "bangerd")
	if id := ExecutableID(exe); id != "" {
		t.Errorf("missing file: id %q, want empty", id)
	}
	if err := os.WriteFile(exe, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	first := ExecutableID(exe)
	if first == "" || ExecutableID(exe) != first {
		t.Fatalf("id of an unchanged file: %q then %q", first, ExecutableID(exe))
	}
	// A rebuild of the same size, one second later.
	os.WriteFile(exe, []byte("v2"), 0o755)
	later := time.Now().Add(time.Second)
	os.Chtimes(exe, later, later)
	if ExecutableID(exe) == first {
		t.Errorf("rebuilt file kept id %q", first)
	}
}
