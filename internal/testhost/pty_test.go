package testhost

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestOnTerminal(t *testing.T) {
	out, code := OnTerminal(t, exec.Command("sh", "-c", `test -t 0 && test -t 1 && test -t 2 && tty; echo err >&2; exit 3`), 10*time.Second)
	if code != 3 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "err\r\n") {
		t.Fatalf("exit %d, output %q: want a terminal on every stream and exit 3", code, out)
	}
	// The terminal is the controlling one: /dev/tty opens.
	if out, code := OnTerminal(t, exec.Command("sh", "-c", "echo hi >/dev/tty"), 10*time.Second); code != 0 || out != "hi\r\n" {
		t.Fatalf("/dev/tty: exit %d, %q", code, out)
	}
}

func TestTerminalQuery(t *testing.T) {
	for out, want := range map[string]string{
		"plain text\r\n":               "",
		"\x1b]11;?\x1b\\\x1b[6nbanger": "\x1b]11;",
		"x\x1b[6n":                     "\x1b[6n",
		"\x1b[31mred\x1b[0m":           "",
	} {
		if got := TerminalQuery(out); got != want {
			t.Errorf("%q: %q, want %q", out, got, want)
		}
	}
}
