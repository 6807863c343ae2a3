package scripts

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestShellcheck keeps the host scripts and the benchmark scripts
// shellcheck-clean.
func TestShellcheck(t *testing.T) {
	bin, err := exec.LookPath("shellcheck")
	if err != nil {
		testhost.Skip(t, "shellcheck is not installed (apt-get install shellcheck; make deps installs it)")
	}
	files := []string{"customize.sh", "make-runtime.sh", filepath.Join("guest", "banger-net"),
		filepath.Join("..", "bench", "run.sh"), filepath.Join("..", "bench", "build.sh")}
	out, err := exec.Command(bin, append([]string{"--severity=style"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck %v: %v\n%s", files, err, out)
	}
}
