package guestid

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/agent/agenttest"
)

func TestHostsWithName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "127.0.1.1\tnew\n"},
		{"127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n"},
		{"127.0.0.1 localhost\n127.0.1.1 template\n::1 ip6\n", "127.0.0.1 localhost\n127.0.1.1\tnew\n::1 ip6\n"},
		{"127.0.1.1 a\n127.0.1.1 b", "127.0.1.1\tnew\n"},
		{"# no newline at the end", "# no newline at the end\n127.0.1.1\tnew\n"},
	} {
		if got := string(HostsWithName([]byte(tc.in), "new")); got != tc.want {
			t.Errorf("HostsWithName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGARP(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:12:34:56")
	f := GARP(hw, net.ParseIP("172.30.0.7"))
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1,
		0x52, 0x54, 0, 0x12, 0x34, 0x56, 172, 30, 0, 7,
		0, 0, 0, 0, 0, 0, 172, 30, 0, 7,
	}
	if !bytes.Equal(f, want) {
		t.Errorf("GARP = % x\nwant   % x", f, want)
	}
}

func validParams() IdentityParams {
	return IdentityParams{
		Hostname: "dev", MachineID: strings.Repeat("ab", 16), MAC: "52:54:00:12:34:56",
		Address: "172.30.0.7/24", Gateway: "172.30.0.1", DNS: "1.1.1.1",
		HostKey:    "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
		HostKeyPub: "ssh-ed25519 AAAA root@dev", Entropy: make([]byte, 64),
	}
}

func TestCheck(t *testing.T) {
	if err := validParams().Check(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	for name, mod := range map[string]func(*IdentityParams){
		"hostname":   func(p *IdentityParams) { p.Hostname = "Bad_Name" },
		"machine id": func(p *IdentityParams) { p.MachineID = "xyz" },
		"mac":        func(p *IdentityParams) { p.MAC = "nope" },
		"address":    func(p *IdentityParams) { p.Address = "172.30.0.7" },
		"gateway":    func(p *IdentityParams) { p.Gateway = "gw" },
		"host key":   func(p *IdentityParams) { p.HostKey = "" },
		"entropy":    func(p *IdentityParams) { p.Entropy = make([]byte, 8) },
	} {
		p := validParams()
		mod(&p)
		if err := p.Check(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Check() = %v, want an error naming it", name, err)
		}
	}
}

// listener starts a process that, like sshd's listener, writes its pid to
// pidFile, and on SIGHUP removes it, takes a while (restarting) and
// writes it again after marker. It returns its pid.
func listener(t *testing.T, pidFile, marker, onHUP string) int {
	t.Helper()
	script := `echo $$ > "$1"; trap '` + onHUP + `' HUP; while :; do sleep 0.05; done`
	cmd := exec.Command("sh", "-c", script, "sh", pidFile, marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() // reaped: a zombie would look alive
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	// Generous: on a loaded CI host a shell may take seconds to start.
	for deadline := time.Now().Add(time.Minute); ; {
		if b, err := os.ReadFile(pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(cmd.Process.Pid) {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the listener did not write its pid file within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRestartListener(t *testing.T) {
	dir := t.TempDir()
	pidFile, marker := filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "restarted")

	t.Run("waits for the restart", func(t *testing.T) {
		pid := listener(t, pidFile, marker, `rm -f "$1"; sleep 0.3; touch "$2"; echo $$ > "$1"`)
		got, err := restartListener(pidFile)
		if err != nil || got != pid {
			t.Fatalf("restartListener = %d, %v; want %d", got, err, pid)
		}
		if err := waitRestarted(context.Background(), pidFile, pid, time.Minute); err != nil {
			t.Fatal(err)
		}
		// The pid file it found is the restarted process's, not the old one.
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("waitRestarted returned before the restart was done: %v", err)
		}
	})
	t.Run("a listener that ends", func(t *testing.T) {
		pid := listener(t, pidFile, marker, `rm -f "$1"; exit 1`)
		if _, err := restartListener(pidFile); err != nil {
			t.Fatal(err)
		}
		err := waitRestarted(context.Background(), pidFile, pid, time.Minute)
		if err == nil || !strings.Contains(err.Error(), "ended instead of restarting") {
			t.Errorf("waitRestarted = %v, want an error saying sshd ended", err)
		}
	})
	t.Run("a listener that does not restart", func(t *testing.T) {
		pid := listener(t, pidFile, marker, `:`)
		if _, err := restartListener(pidFile); err != nil {
			t.Fatal(err)
		}
		err := waitRestarted(context.Background(), pidFile, pid, 200*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "did not restart within") {
			t.Errorf("waitRestarted = %v, want a timeout", err)
		}
	})
	t.Run("no listener", func(t *testing.T) {
		os.Remove(pidFile)
		if pid, err := restartListener(pidFile); pid != 0 || err != nil {
			t.Errorf("restartListener without a pid file = %d, %v; want 0, nil", pid, err)
		}
		// A stale pid file: a process that no longer runs.
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
		if pid, err := restartListener(pidFile); pid != 0 || err != nil {
			t.Errorf("restartListener with a stale pid file = %d, %v; want 0, nil", pid, err)
		}
	})
}

// fakeSystem records the parts identify runs, in order; a part named in
// fail fails, and machine-id waits for release.
type fakeSystem struct {
	mu      sync.Mutex
	log     []string
	fail    string
	release chan struct{}
}

func (f *fakeSystem) did(part string) error {
	f.mu.Lock()
	f.log = append(f.log, part)
	f.mu.Unlock()
	if part == f.fail {
		return errors.New(part + " failed")
	}
	return nil
}

func (f *fakeSystem) parts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func (f *fakeSystem) system() system {
	return system{
		reseed:     func([]byte) error { return f.did("reseed") },
		setClock:   func(int64) error { return f.did("clock") },
		setHostKey: func(string, string) (int, error) { return 0, f.did("host key") },
		waitSSHD:   func(context.Context, int) error { return f.did("sshd restart") },
		setNetwork: func(IdentityParams, *stepTimer) (netDevice, error) {
			return netDevice{Name: "eth0", Index: 2}, f.did("network")
		},
		announce: func(netDevice, IdentityParams) error { return f.did("arp") },
		writeFile: func(path string, _ []byte, _ os.FileMode) error {
			if path == "/etc/machine-id" && f.release != nil {
				<-f.release
			}
			return f.did(path)
		},
		setHostname: func(string) error { return f.did("hostname") },
	}
}

// identitySession serves OpIdentity with identify on sys.
func identitySession(t *testing.T, sys system) *agent.Session {
	return agenttest.Session(t, func(srv *agent.Server) {
		srv.Handle(OpIdentity, func(ctx context.Context, st *agent.Stream) error {
			var p IdentityParams
			if err := st.Decode(&p); err != nil {
				return err
			}
			return identify(ctx, st, p, sys, newStepTimer())
		})
	})
}

func TestGiveAnswersWhenReachable(t *testing.T) {
	f := &fakeSystem{release: make(chan struct{})}
	sess := identitySession(t, f.system())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := validParams()
	p.HostTimeNanos = time.Now().UnixNano()
	reached := make(chan []string, 1)
	type given struct {
		res IdentityResult
		err error
	}
	out := make(chan given, 1)
	go func() {
		res, err := Give(ctx, sess, p, func() { reached <- f.parts() })
		out <- given{res, err}
	}()
	select {
	case parts := <-reached:
		// The address comes up last, after the key and the reseed.
		want := []string{"reseed", "clock", "host key", "network", "arp"}
		if !slices.Equal(parts, want) {
			t.Errorf("parts done when reachable = %v, want %v", parts, want)
		}
	case g := <-out:
		t.Fatalf("Give returned (%v) before calling reachable", g.err)
	case <-ctx.Done():
		t.Fatal("reachable was not called while the rest of the identity waits")
	}
	select {
	case g := <-out:
		t.Fatalf("Give returned (%v) before the rest of the identity was written", g.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(f.release)
	g := <-out
	if g.err != nil {
		t.Fatal(g.err)
	}
	want := []string{"reseed", "clock", "host key", "network", "arp", "/etc/machine-id", "hostname", "/etc/resolv.conf"}
	if parts := f.parts(); !slices.Equal(parts, want) {
		t.Errorf("parts = %v, want %v", parts, want)
	}
	if !g.res.ClockSet || g.res.Interface != "eth0" {
		t.Errorf("result = %+v, want the clock set and eth0", g.res)
	}
	var names []string
	for _, s := range g.res.Steps {
		names = append(names, s.Name)
	}
	for _, n := range []string{"host key", "reachable (since the request)", "hostname", "done (since the request)"} {
		if !slices.Contains(names, n) {
			t.Errorf("steps %v lack %q", names, n)
		}
	}
}

func TestGiveFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Run("a failure before the answer leaves the network alone", func(t *testing.T) {
		f := &fakeSystem{fail: "host key"}
		called := false
		_, err := Give(ctx, identitySession(t, f.system()), validParams(), func() { called = true })
		if err == nil || !strings.Contains(err.Error(), "host key failed") {
			t.Errorf("Give = %v, want the host key's failure", err)
		}
		if called {
			t.Error("reachable was called although the identity failed")
		}
		if slices.Contains(f.parts(), "network") {
			t.Errorf("parts = %v: the network came up with the template's host key", f.parts())
		}
	})
	t.Run("a failure after the answer", func(t *testing.T) {
		f := &fakeSystem{fail: "hostname"}
		called := false
		_, err := Give(ctx, identitySession(t, f.system()), validParams(), func() { called = true })
		if err == nil || !strings.Contains(err.Error(), "hostname failed") {
			t.Errorf("Give = %v, want the hostname's failure", err)
		}
		if !called {
			t.Error("reachable was not called")
		}
	})
	t.Run("a stream that ends without the last line", func(t *testing.T) {
		sess := agenttest.Session(t, func(srv *agent.Server) {
			srv.Handle(OpIdentity, func(ctx context.Context, st *agent.Stream) error {
				return st.Accept(IdentityResult{More: true})
			})
		})
		_, err := Give(ctx, sess, validParams(), func() {})
		if err == nil || !strings.Contains(err.Error(), "end of the identity") {
			t.Errorf("Give = %v, want an error saying the end is missing", err)
		}
	})
	t.Run("an agent that answers once done", func(t *testing.T) {
		sess := agenttest.Session(t, func(srv *agent.Server) {
			srv.Handle(OpIdentity, func(ctx context.Context, st *agent.Stream) error {
				return st.Accept(IdentityResult{Interface: "eth0"})
			})
		})
		called := false
		res, err := Give(ctx, sess, validParams(), func() { called = true })
		if err != nil || !called || res.Interface != "eth0" {
			t.Errorf("Give = %+v, %v (reachable called: %v); want eth0, no error, called", res, err, called)
		}
	})
}

// TestWriteFile: an existing regular file is written in place (the same
// inode), longer or shorter, its mode set; a missing file is made; a
// symbolic link or a FIFO is replaced by a regular file, never followed
// or opened for good.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	ino := func(p string) uint64 {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	check := func(p, want string, mode os.FileMode) {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if string(b) != want || !st.Mode().IsRegular() || st.Mode().Perm() != mode {
			t.Errorf("%s: %q, %v; want %q, a regular file of mode %v", p, b, st.Mode(), want, mode)
		}
	}
	p := filepath.Join(dir, "key")
	if err := writeFile(p, []byte("first and long"), 0o600); err != nil {
		t.Fatal(err)
	}
	check(p, "first and long", 0o600)
	before := ino(p)
	for _, c := range []struct {
		data string
		mode os.FileMode
	}{{"short", 0o600}, {"longer than all before", 0o644}, {"x", 0o400}} {
		if err := writeFile(p, []byte(c.data), c.mode); err != nil {
			t.Fatal(err)
		}
		check(p, c.data, c.mode)
		if ino(p) != before {
			t.Errorf("writing %q replaced the file instead of writing it in place", c.data)
		}
	}

	target := filepath.Join(dir, "stub")
	os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644)
	link := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(link, []byte("nameserver 10.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(link, "nameserver 10.0.0.1\n", 0o644)
	check(target, "nameserver 127.0.0.53\n", 0o644)

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(fifo, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(fifo, "data", 0o644)
}
