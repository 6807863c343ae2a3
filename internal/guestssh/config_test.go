package guestssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestConfig(t *testing.T) {
	got := Config("/s/ssh/config", "/s/ssh/id_ed25519", []ConfigVM{
		{Name: "dev", Addr: "172.30.0.2", KnownHostsFile: "/s/vms/a/known_hosts"},
		{Name: "web", Addr: "172.30.0.3", KnownHostsFile: "/s p/vms/b/known_hosts"},
	})
	want := `# banger: VMs by name, kept current by bangerd (` + "`banger ssh-config`" + ` prints it).
# Use it with this line at the top of ~/.ssh/config: Include /s/ssh/config

Host dev.banger.internal
    HostName 172.30.0.2
    HostKeyAlias 172.30.0.2
    UserKnownHostsFile /s/vms/a/known_hosts

Host web.banger.internal
    HostName 172.30.0.3
    HostKeyAlias 172.30.0.3
    UserKnownHostsFile "/s p/vms/b/known_hosts"

Host *.banger.internal
    User root
    IdentityFile /s/ssh/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    GlobalKnownHostsFile /dev/null
    CheckHostIP no
    LogLevel ERROR
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestConfigOpenSSH has OpenSSH itself read the config (ssh -G prints the
// options it would use for a host), so the blocks mean what banger says.
func TestConfigOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		testhost.NeedTools(t, "ssh")
	}
	dir := t.TempDir()
	kh := filepath.Join(dir, "vm dir", "known_hosts")
	p := filepath.Join(dir, "config")
	os.WriteFile(p, []byte(Config(p, filepath.Join(dir, "id"), []ConfigVM{{Name: "dev", Addr: "172.30.0.2", KnownHostsFile: kh}})), 0o600)
	out, err := exec.Command("ssh", "-F", p, "-G", "dev.banger.internal").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G: %v\n%s", err, out)
	}
	opts := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, " ")
		opts[k] = v
	}
	for k, v := range map[string]string{
		"hostname": "172.30.0.2", "user": "root", "hostkeyalias": "172.30.0.2",
		"userknownhostsfile": kh, "stricthostkeychecking": "true", "identityfile": filepath.Join(dir, "id"),
		"port": "22",
	} {
		if opts[k] != v {
			t.Errorf("ssh -G: %s = %q, want %q", k, opts[k], v)
		}
	}
	// A VM the file does not list gets the shared options only.
	out, _ = exec.Command("ssh", "-F", p, "-G", "other.banger.internal").CombinedOutput()
	if !strings.Contains(string(out), "hostname other.banger.internal\n") || !strings.Contains(string(out), "user root\n") {
		t.Errorf("ssh -G other.banger.internal:\n%s", out)
	}
}
