package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// fakeQMP serves one connection on a Unix socket with the given script:
// for every command received it writes the lines that script returns.
func fakeQMP(t *testing.T, script func(cmd map[string]any) []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}` + "\r\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var cmd map[string]any
			if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
				return
			}
			for _, line := range script(cmd) {
				c.Write([]byte(line + "\r\n"))
			}
		}
	}()
	return path
}

func id(cmd map[string]any) string {
	b, _ := json.Marshal(cmd["id"])
	return string(b)
}

func TestQMPFakeServer(t *testing.T) {
	path := fakeQMP(t, func(cmd map[string]any) []string {
		switch cmd["execute"] {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": ` + id(cmd) + `}`}
		case "query-status":
			return []string{
				`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`,
				`{"return": {"status": "stale"}, "id": 999}`,
				`{"return": {"status": "running", "running": true}, "id": ` + id(cmd) + `}`,
			}
		case "echo":
			b, _ := json.Marshal(cmd["arguments"])
			return []string{`{"return": ` + string(b) + `, "id": ` + id(cmd) + `}`}
		case "hang":
			return nil
		default:
			return []string{`{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd["execute"].(string) + ` has not been found"}, "id": ` + id(cmd) + `}`}
		}
	})
	ctx := context.Background()
	q, err := DialQMP(ctx, path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if g := q.Greeting(); g.Version.QEMU.Major != 7 || g.Version.Package != "fake" {
		t.Errorf("greeting = %+v", g)
	}
	ret, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %s (%v), want the reply with our id, after skipping the event and the stale reply", ret, err)
	}
	ret, err = q.Execute(ctx, "echo", map[string]any{"a": 1})
	if err != nil || string(ret) != `{"a":1}` {
		t.Fatalf("echo = %s, %v", ret, err)
	}
	_, err = q.Execute(ctx, "nope", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "nope" {
		t.Fatalf("unknown command err = %#v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = q.Execute(cctx, "hang", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("hang returned after %v", d)
	}
}

func TestQMPNoServer(t *testing.T) {
	_, err := DialQMP(context.Background(), filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("err = %v, want a dial error naming the socket", err)
	}
	// A socket that accepts but never greets.
	path := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t0 := time.Now()
	_, err = DialQMP(context.Background(), path, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mute server err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

// qemuBinary returns the QEMU binary for tests or skips.
func qemuBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath(DefaultBinary)
	if err != nil {
		testhost.Skip(t, "%s not installed (apt-get install qemu-system-x86)", DefaultBinary)
	}
	return bin
}

func TestQMPRealQEMU(t *testing.T) {
	bin := qemuBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	// Paused (-S) with no kernel: enough for QMP, no guest runs.
	cmd := exec.Command(bin, "-M", "microvm", "-S", "-nodefaults", "-nographic", "-display", "none",
		"-accel", "tcg", "-chardev", "socket,id=qmp,path="+sock+",server=on,wait=off", "-mon", "chardev=qmp,mode=control")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx := context.Background()
	var q *QMP
	t0 := time.Now()
	for {
		var err error
		q, err = DialQMP(ctx, sock, time.Second)
		if err == nil {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("qemu QMP never answered: %v; stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer q.Close()
	t.Logf("QMP ready %v after exec", time.Since(t0).Round(time.Millisecond))
	if g := q.Greeting(); g.Version.QEMU.Major == 0 {
		t.Errorf("greeting has no version: %+v", g)
	}
	status := func() string {
		ret, err := q.Execute(ctx, "query-status", nil)
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ Status string }
		json.Unmarshal(ret, &st)
		return st.Status
	}
	if s := status(); s != "prelaunch" {
		t.Errorf("status = %q, want prelaunch", s)
	}
	// cont emits a RESUME event before its reply: it must be skipped.
	if _, err := q.Execute(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	if s := status(); s != "running" {
		t.Errorf("status after cont = %q, want running", s)
	}
	if _, err := q.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	ret, err := q.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info version"})
	if err != nil || !strings.Contains(string(ret), ".") {
		t.Errorf("info version = %s, %v", ret, err)
	}
	_, err = q.Execute(ctx, "no-such-command", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("bad command err = %v, want CommandNotFound", err)
	}
	if _, err := q.Execute(ctx, "quit", nil); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("qemu after quit: %v", err)
	}
	_ = os.Remove(sock)
}

// TestPauseRealQEMU pauses and resumes a real QEMU through the driver's
// Pauser ability and reads the run state back from QEMU.
func TestPauseRealQEMU(t *testing.T) {
	bin := qemuBinary(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	// Paused (-S) with no kernel: its vCPUs can stop and go on, no guest runs.
	cmd := exec.Command(bin, "-M", "microvm", "-S", "-nodefaults", "-nographic", "-display", "none",
		"-accel", "tcg", "-chardev", "socket,id=qmp,path="+sock+",server=on,wait=off", "-mon", "chardev=qmp,mode=control")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx := context.Background()
	st := vmm.State{ControlSocket: sock}
	var p vmm.Pauser = &Driver{}
	// QMP answers once QEMU has bound its socket.
	for t0 := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		paused, err := p.Paused(ctx, st)
		if err == nil {
			if paused {
				t.Error("a guest that never ran (prelaunch) reads as paused")
			}
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatal(err)
		}
	}
	if err := p.Resume(ctx, st); err != nil { // out of prelaunch
		t.Fatal(err)
	}
	vmmtest.CheckPauser(t, p, st, nil)
}
