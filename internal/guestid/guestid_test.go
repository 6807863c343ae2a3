package guestid

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
