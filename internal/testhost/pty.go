package testhost

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// OnTerminal runs cmd as an interactive shell would: with a new
// pseudo-terminal as its controlling terminal, stdin, stdout and stderr. It
// waits for cmd to exit and returns everything cmd wrote to the terminal
// (with the terminal's "\r\n" line ends) and its exit status. t fails when
// cmd runs longer than timeout (it is killed) or cannot start. It skips
// (Skip) where there are no pseudo-terminals.
func OnTerminal(t testing.TB, cmd *exec.Cmd, timeout time.Duration) (out string, code int) {
	t.Helper()
	master, slave := openPTY(t)
	defer master.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err := cmd.Start()
	slave.Close() // the child has it; reading the master ends when it exits
	if err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	var buf bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&buf, master); close(copied) }() // EIO once no one holds the slave
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-waited
		<-copied
		t.Fatalf("%v ran longer than %s on a terminal; it wrote %q", cmd.Args, timeout, buf.String())
	}
	<-copied
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return buf.String(), code
}

// RawPTY opens a pseudo-terminal pair with the slave in raw mode, so bytes
// pass unchanged (it stands in for a serial port or a terminal), and
// closes both when t ends. The slave stays open meanwhile, which keeps the
// pair alive while code under test closes and reopens the slave by its
// name. It skips (Skip) where there are no pseudo-terminals.
func RawPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	m, s := openPTY(t)
	t.Cleanup(func() { m.Close(); s.Close() })
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// openPTY opens a pseudo-terminal pair; the caller closes both.
func openPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		Skip(t, "no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, s
}

// terminalQueries are the requests a program writes to ask the terminal
// something: the background colour (OSC 11) and the cursor position
// (DSR 6), as Lip Gloss and termenv do.
var terminalQueries = []string{"\x1b]11;", "\x1b[6n"}

// TerminalQuery returns the first terminal query in out (what a program
// wrote to a terminal), "" when there is none.
func TerminalQuery(out string) string {
	for _, q := range terminalQueries {
		if strings.Contains(out, q) {
			return q
		}
	}
	return ""
}
