package main

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/testhost"
)

// buildAgent builds the agent the way images get it: static, no cgo.
func buildAgent(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		testhost.Skip(t, "no go tool to build the binary: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "banger-vsock-pingd")
	cmd := exec.Command(gobin, "build", "-trimpath",
		"-ldflags", "-X github.com/bangerhq/banger/internal/version.Version=v0.0.0-test",
		"-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	return bin
}

func TestStaticBuildAndVersion(t *testing.T) {
	bin := buildAgent(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has an ELF interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("binary needs shared libraries %q", libs)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "banger-vsock-pingd v0.0.0-test" {
		t.Fatalf("--version: %q, %v", out, err)
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--version"}, 0, "banger-vsock-pingd "},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"--vsock-port", "4294967296"}, 2, "out of range"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if code := run(tc.args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Fatalf("exit %d, output %q; want %d and %q", code, out.String(), tc.code, tc.out)
			}
		})
	}
}

// openPTY is a raw pseudo-terminal pair: the slave (by its name) stands in
// for the guest's /dev/virtio-ports/... node, the master for the host end.
func openPTY(t testing.TB) (master *os.File, slavePath string) {
	t.Helper()
	m, s := testhost.RawPTY(t)
	return m, s.Name()
}

// TestBinaryServesSerialPort runs the built binary on a pty standing in for
// /dev/virtio-ports/org.banger.agent, pings it, and stops it with SIGTERM.
func TestBinaryServesSerialPort(t *testing.T) {
	bin := buildAgent(t)
	master, slave := openPTY(t)

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--serial-device", slave, "--vsock-port", "0")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, rtt, err := agent.Ping(ctx, master)
	if err != nil {
		t.Fatalf("ping: %v\nagent stderr:\n%s", err, stderr.String())
	}
	host, _ := os.Hostname()
	if !r.OK || r.Hostname != host || r.AgentVersion != "v0.0.0-test" || r.UptimeSeconds <= 0 || len(r.BootID) != 36 {
		t.Fatalf("reply %+v", r)
	}
	t.Logf("ping through the binary over a pty: %v", rtt)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no exit 5s after SIGTERM\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped") || strings.Contains(stderr.String(), "time=") {
		t.Errorf("log:\n%s", stderr.String())
	}
}
