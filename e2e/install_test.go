package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
)

// installedTree packages the checkout's runtime bundle, serves it from a
// loopback HTTP server, installs it into PREFIX/lib/banger with `banger
// runtime install URL`, copies the binaries to PREFIX/bin, and boots a VM
// with the installed banger, which must find its bundle by itself.
func installedTree(ctx context.Context, t *testing.T, e *env) {
	dist := t.TempDir()
	tarball := filepath.Join(dist, "banger-runtime.tar.gz")
	if out, err := e.plain(ctx, filepath.Join(e.bin, "banger"), "runtime", "package", "--dir", e.runtime, "-o", tarball); err != nil {
		t.Fatalf("runtime package: %v\n%s", err, out)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dist)))
	defer srv.Close()

	// Plain HTTP is fine with the checksum given: banger fetches published
	// checksum files only over HTTPS, so the expected SHA-256 is passed.
	sum, err := os.ReadFile(tarball + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(e.root, "prefix")
	if out, err := e.plain(ctx, filepath.Join(e.bin, "banger"), "runtime", "install", "--dir", filepath.Join(prefix, "lib", "banger"),
		"--sha256", strings.Fields(string(sum))[0], srv.URL+"/banger-runtime.tar.gz"); err != nil {
		t.Fatalf("runtime install from %s: %v\n%s", srv.URL, err, out)
	}
	os.MkdirAll(filepath.Join(prefix, "bin"), 0o755)
	for _, b := range []string{"banger", "bangerd", "banger-tui"} {
		data, err := os.ReadFile(filepath.Join(e.bin, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(prefix, "bin", b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := e.plain(ctx, filepath.Join(prefix, "bin", "banger"), "runtime", "verify"); err != nil {
		t.Fatalf("installed bundle does not verify: %v\n%s", err, out)
	}

	// The installed daemon must resolve ../lib/banger itself.
	e.must(ctx, "daemon", "stop")
	saved := e.runtime
	e.runtime, e.cli = "", filepath.Join(prefix, "bin", "banger")
	defer func() {
		e.banger(ctx, "daemon", "stop")
		e.runtime, e.cli = saved, ""
	}()
	e.must(ctx, "vm", "create", "inst", "--cpus", "1", "--memory", "512")
	var v api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "show", "--json", "inst")), &v); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(prefix, "lib", "banger"); !strings.HasPrefix(v.Kernel, want) {
		t.Fatalf("VM booted kernel %s, want one under %s", v.Kernel, want)
	}
	e.must(ctx, "vm", "ssh", "--no-remind", "inst", "--", "true")
	e.must(ctx, "vm", "rm", "--force", "inst")

	// A tampered bundle stops vm create before anything is made, naming the
	// file, both checksums and the fix.
	initrd := filepath.Join(prefix, "lib", "banger", "kernel", "initrd.img")
	f, err := os.OpenFile(initrd, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 4096)
	b[0] ^= 0xff
	f.WriteAt(b, 4096)
	f.Close()
	stderr := e.fails(ctx, "vm", "create", "tampered", "--cpus", "1", "--memory", "512")
	for _, want := range []string{"kernel/initrd.img", "expected SHA-256", "actual", filepath.Join(prefix, "lib", "banger"), "to fix"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("tampered bundle: error lacks %q:\n%s", want, stderr)
		}
	}
}

// plain runs a binary with the env's environment, outside the namespace.
func (e *env) plain(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = e.environ()
	out, err := cmd.CombinedOutput()
	return string(out), err
}
