package guestexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/agent/agenttest"
)

// session runs a real agent server with Handler on one end of a
// socketpair and returns the host's session on the other.
func session(t *testing.T) *agent.Session {
	return agenttest.Session(t, func(s *agent.Server) { s.Handle(Op, Handler) })
}

// run runs p through sess with s and returns the exit status.
func run(t *testing.T, sess *agent.Session, p Params, s Streams) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res Result
	c, err := sess.Open(ctx, Op, p, &res)
	if err != nil {
		t.Fatalf("open exec: %v", err)
	}
	defer c.Close()
	if s.Stdout == nil {
		s.Stdout = io.Discard
	}
	if s.Stderr == nil {
		s.Stderr = io.Discard
	}
	code, err := Run(c, s)
	if err != nil {
		t.Fatalf("run %v: %v", p.Argv, err)
	}
	return code
}

func TestExec(t *testing.T) {
	sess := session(t)

	t.Run("stdout, stderr and the exit status apart", func(t *testing.T) {
		var so, se bytes.Buffer
		code := run(t, sess, Params{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, Streams{Stdout: &so, Stderr: &se})
		if code != 3 || so.String() != "out\n" || se.String() != "err\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, so.String(), se.String())
		}
	})
	t.Run("argv exactly, env and dir", func(t *testing.T) {
		var so bytes.Buffer
		dir := t.TempDir()
		code := run(t, sess, Params{Argv: []string{"sh", "-c", `printf '%s|' "$0" "$1" "$FOO" "$PWD"`, "a b", "$HOME;*"}, Env: []string{"FOO=bar=baz"}, Dir: dir}, Streams{Stdout: &so})
		if want := "a b|$HOME;*|bar=baz|" + dir + "|"; code != 0 || so.String() != want {
			t.Fatalf("exit %d, stdout %q, want %q", code, so.String(), want)
		}
	})
	t.Run("binary stdin through cat", func(t *testing.T) {
		data := make([]byte, 3<<20)
		rand.Read(data)
		var so bytes.Buffer
		code := run(t, sess, Params{Argv: []string{"cat"}, Stdin: true}, Streams{Stdin: bytes.NewReader(data), Stdout: &so})
		if code != 0 || !bytes.Equal(so.Bytes(), data) {
			t.Fatalf("exit %d, %d bytes back of %d", code, so.Len(), len(data))
		}
	})
	t.Run("without -i stdin is empty", func(t *testing.T) {
		var so bytes.Buffer
		code := run(t, sess, Params{Argv: []string{"wc", "-c"}}, Streams{Stdin: strings.NewReader("ignored"), Stdout: &so})
		if code != 0 || strings.TrimSpace(so.String()) != "0" {
			t.Fatalf("exit %d, stdout %q", code, so.String())
		}
	})
	t.Run("a missing command is 127 with a message", func(t *testing.T) {
		var msg string
		code := run(t, sess, Params{Argv: []string{"no-such-command-here"}}, Streams{OnError: func(m string) { msg = m }})
		if code != 127 || !strings.Contains(msg, "no-such-command-here") {
			t.Fatalf("exit %d, message %q", code, msg)
		}
	})
	t.Run("a signal reaches the process group: 128+n", func(t *testing.T) {
		sig := make(chan syscall.Signal, 1)
		var so bytes.Buffer
		pr, pw := io.Pipe()
		go func() {
			// Once the command has said it runs, interrupt it.
			buf := make([]byte, 6)
			io.ReadFull(pr, buf)
			so.Write(buf)
			sig <- syscall.SIGINT
			io.Copy(io.Discard, pr)
		}()
		code := run(t, sess, Params{Argv: []string{"sh", "-c", "echo ready; sleep 30; echo never"}}, Streams{Stdout: pw, Signals: sig})
		pw.Close()
		if code != 128+int(syscall.SIGINT) || so.String() != "ready\n" {
			t.Fatalf("exit %d, stdout %q", code, so.String())
		}
	})
	t.Run("a terminal, resized", func(t *testing.T) {
		resize := make(chan [2]uint16, 1)
		resize <- [2]uint16{40, 120}
		var so bytes.Buffer
		// The first stty size may run before the resize frame: sleep.
		code := run(t, sess, Params{Argv: []string{"sh", "-c", "test -t 0 && test -t 1 && sleep 0.5 && stty size"}, TTY: true, Rows: 10, Cols: 20}, Streams{Stdout: &so, Resize: resize})
		if code != 0 || strings.TrimSpace(so.String()) != "40 120" {
			t.Fatalf("exit %d, stdout %q", code, so.String())
		}
	})
	t.Run("the host goes away: the command is hung up", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mark := t.TempDir() + "/mark"
		c, err := sess.Open(ctx, Op, Params{Argv: []string{"sh", "-c", "trap 'echo hup > " + mark + "; exit 1' HUP; echo ready; while :; do sleep 0.1; done"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		c.Read(buf)
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if b, _ := os.ReadFile(mark); string(b) == "hup\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the command got no SIGHUP after the host left")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("bad params are refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, p := range []Params{{}, {Argv: []string{"true"}, Env: []string{"NOEQUALS"}}} {
			_, err := sess.Open(ctx, Op, p, nil)
			var re *agent.RemoteError
			if !errors.As(err, &re) || re.Code != agent.CodeInvalid {
				t.Errorf("%+v: %v", p, err)
			}
		}
	})
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	fw := &frameWriter{w: &b}
	big := make([]byte, MaxPayload+10)
	rand.Read(big)
	fw.write(FrameStdout, big)
	fw.write(FrameStdin, nil)
	buf := make([]byte, MaxPayload)
	var got []byte
	for range 2 {
		typ, p, err := readFrame(&b, buf)
		if err != nil || typ != FrameStdout {
			t.Fatalf("frame: %c %v", typ, err)
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("a large write did not come back whole in two frames")
	}
	if typ, p, err := readFrame(&b, buf); err != nil || typ != FrameStdin || len(p) != 0 {
		t.Fatalf("end of input frame: %c %d %v", typ, len(p), err)
	}
	// A frame longer than the maximum is refused before it is read.
	var hdr [5]byte
	hdr[0] = FrameStdout
	binary.BigEndian.PutUint32(hdr[1:], MaxPayload+1)
	if _, _, err := readFrame(bytes.NewReader(hdr[:]), buf); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	// A truncated frame is an unexpected end.
	if _, _, err := readFrame(bytes.NewReader([]byte{FrameStdout, 0, 0, 0, 9, 'a'}), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
}
