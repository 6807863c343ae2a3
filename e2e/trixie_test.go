package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/testhost"
)

// TestTrixie: an image built from debian:trixie (Debian 13, OpenSSH 10,
// whose listener loads its host keys once and runs sshd-session for each
// connection) boots cold to SSH, the agent and vm exec, and sshd presents
// the VM's pinned key; a clone of its warm template presents its own
// pinned ed25519 host key, not the template's, as soon as vm create
// returns (the guest agent restarts sshd, SIGHUP, and answers once it
// listens again): ssh-keyscan from the test's namespace, and vm ssh,
// which pins the key. One image and one VM shape serve both parts.
func TestTrixie(t *testing.T) {
	requireHost(t)
	testhost.NeedTools(t, "ssh-keyscan")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, "BANGER_DEBUG=1") // the clone's steps in the guest
	logStep := stepLogger(t)
	e.must(ctx, "image", "build", "trixie", "--from", "debian:trixie", "--quiet")
	logStep("image build trixie")
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	shape := []string{"--image", "trixie", "--cpus", "1", "--memory", "512", "--disk", "1G"}

	// Cold boot.
	var cold api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, append([]string{"vm", "create", "t1", "--cold", "--json"}, shape...)...)), &cold); err != nil {
		t.Fatal(err)
	}
	logStep("vm create --cold (to SSH and agent)")
	osRelease := e.must(ctx, "vm", "exec", "t1", "--", "cat", "/etc/os-release")
	if !strings.Contains(osRelease, "VERSION_CODENAME=trixie") {
		t.Fatalf("the trixie image is not Debian 13:\n%s", osRelease)
	}
	// The branch under test is for an sshd with sshd-session.
	e.must(ctx, "vm", "exec", "t1", "--", "test", "-x", "/usr/lib/openssh/sshd-session")
	if out := e.must(ctx, "vm", "ssh", "--no-remind", "t1", "--", "cat", "/etc/hostname"); out != "t1\n" {
		t.Errorf("vm ssh t1: %q", out)
	}
	if out := e.must(ctx, "vm", "ping", "t1"); !strings.Contains(out, "t1 is alive") {
		t.Errorf("vm ping t1: %s", out)
	}
	presented := e.keyscan(cold.IP)
	if pinned := pinnedKey(t, cold); presented != pinned {
		t.Errorf("cold-booted t1 presents host key %q, pinned %q", presented, pinned)
	}
	// Once booted, not degraded: a unit that fails on trixie is a unit to fix.
	state := e.banger(ctx, "vm", "exec", "t1", "--", "sh", "-c",
		"systemctl is-system-running --wait; systemd-analyze | head -1; systemctl --failed --no-legend --plain").stdout
	t.Logf("the guest's boot: %s", state)
	if !strings.HasPrefix(state, "running\n") {
		t.Errorf("the trixie guest's boot did not end running:\n%s", state)
	}
	logStep("checks of the cold-booted VM")
	e.must(ctx, "vm", "rm", "--force", "t1")

	// A clone of a warm template: its own host key, at once.
	tplArgs := append([]string{"image", "warm", "trixie"}, shape[2:]...)
	var tpl api.Template
	if err := json.Unmarshal([]byte(e.must(ctx, append(tplArgs, "--json")...)), &tpl); err != nil {
		t.Fatal(err)
	}
	logStep("image warm trixie")
	tplKey := templateHostKey(t, tpl)
	var c api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, append([]string{"vm", "create", "c1", "--json"}, shape...)...)), &c); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.BootedFrom, "template ") {
		t.Fatalf("vm create c1: booted from %q, want the template", c.BootedFrom)
	}
	logStep("vm create from the template")
	for _, l := range strings.Split(e.daemonLog(), "\n") {
		if strings.Contains(l, "vm=c1") && (strings.Contains(l, "step in the guest") || strings.Contains(l, "identity set")) {
			t.Log(l)
		}
	}
	// At once: vm create has returned, so sshd must serve the new key now.
	presented = e.keyscan(c.IP)
	pinned := pinnedKey(t, c)
	if presented != pinned {
		t.Errorf("clone c1 presents host key %q right after vm create, pinned %q (the template's is %q)", presented, pinned, tplKey)
	}
	if presented == tplKey {
		t.Errorf("clone c1 presents its template's host key %q", tplKey)
	}
	if out := e.must(ctx, "vm", "ssh", "--no-remind", "c1", "--", "cat", "/etc/hostname"); out != "c1\n" {
		t.Errorf("vm ssh c1: %q", out)
	}
	if out := e.must(ctx, "vm", "exec", "c1", "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"); !strings.Contains(out, strings.Fields(pinned)[1]) {
		t.Errorf("c1's host key file %q is not its pinned key %q", out, pinned)
	}
	if !strings.Contains(e.daemonLog(), "ssh_reloaded=true") {
		t.Errorf("the clone's identity did not restart sshd (no ssh_reloaded=true in the daemon log)")
	}
	logStep("host key checks of the clone")
	e.must(ctx, "vm", "rm", "--force", "c1")
}

// keyscan returns the ed25519 host key (TYPE BASE64) sshd at ip presents,
// read with ssh-keyscan in the test's namespace.
func (e *env) keyscan(ip string) string {
	e.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", e.netns, "ssh-keyscan", "-T", "20", "-t", "ed25519", ip).Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == ip {
			return f[1] + " " + f[2]
		}
	}
	e.t.Fatalf("ssh-keyscan %s: no ed25519 key (%v): %q", ip, err, out)
	return ""
}

// pinnedKey is the host key (TYPE BASE64) banger pinned for v.
func pinnedKey(t *testing.T, v api.VM) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(v.Dir, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 || f[0] != v.IP {
		t.Fatalf("%s's known_hosts: %q", v.Name, b)
	}
	return f[1] + " " + f[2]
}

// templateHostKey is the host key (TYPE BASE64) in tpl's disk, read with
// debugfs.
func templateHostKey(t *testing.T, tpl api.Template) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub", filepath.Join(tpl.Dir, "disk.ext4")).Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 2 || !strings.HasPrefix(f[0], "ssh-") {
		t.Fatalf("the template's host key: %v: %q", err, out)
	}
	return f[0] + " " + f[1]
}
