package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair, closed when t ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// runOnTerminal runs argv with a pseudo-terminal as its controlling
// terminal, stdin, stdout and stderr, as in an interactive shell, and
// returns everything it wrote there.
func runOnTerminal(t *testing.T, env []string, argv ...string) string {
	t.Helper()
	master, slave := openPTY(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&out, master); close(done) }() // ends with EIO once the last writer exits
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case <-waitErr:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%v did not finish in 30 s (waiting for a terminal answer?); output %q", argv, out.String())
	}
	<-done
	return out.String()
}

// TestNoTerminalQuery runs the real banger binary on a pseudo-terminal and
// fails when it writes a terminal query: OSC 11 (background colour) or a
// cursor position report request. Bubble Tea's init sends both unless
// package quietterm settles the question first.
func TestNoTerminalQuery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the banger binary")
	}
	bin := filepath.Join(t.TempDir(), "banger")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/banger")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TERM=xterm-256color",
		"XDG_RUNTIME_DIR=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_STATE_HOME=" + dir, "XDG_DATA_HOME=" + dir}
	for _, args := range [][]string{{"--help"}, {"version"}, {"vm", "frobnicate"}, {"vm", "create", "--help"}} {
		out := runOnTerminal(t, env, append([]string{bin}, args...)...)
		if !strings.Contains(out, "banger") {
			t.Errorf("banger %v printed %q: not its output", args, out)
		}
		for _, q := range []string{"\x1b]11;", "\x1b[6n"} {
			if strings.Contains(out, q) {
				t.Errorf("banger %v wrote the terminal query %q: %q", args, q, out)
			}
		}
	}
}
