package sshkey

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestOpenSSHReadsTheKeys: OpenSSH's own ssh-keygen reads the private key
// and derives the same public key (the real check that sshd and ssh accept
// it is the end-to-end lifecycle test, which logs in with these keys).
func TestOpenSSHReadsTheKeys(t *testing.T) {
	keygen := testhost.NeedTools(t, "ssh-keygen")["ssh-keygen"]
	p, err := New("root@dev")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(p.Private), "-----BEGIN OPENSSH PRIVATE KEY-----\n") ||
		!strings.HasPrefix(p.Key, "ssh-ed25519 ") || len(strings.Fields(p.Key)) != 2 ||
		p.PublicLine() != p.Key+" root@dev" {
		t.Fatalf("pair: %q / %q / %q", p.Private, p.Key, p.PublicLine())
	}
	f := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f, p.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-y", "-f", f).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -y cannot read the private key: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != p.PublicLine() && got != p.Key {
		t.Errorf("ssh-keygen derives %q, the pair says %q", got, p.PublicLine())
	}
	q, _ := New("root@dev")
	if q.Key == p.Key {
		t.Error("two new keys are the same")
	}
}

func TestEnsure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	path := filepath.Join(dir, "id_ed25519")
	line, err := Ensure(path, "bangerd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "ssh-ed25519 ") || !strings.HasSuffix(line, " bangerd") {
		t.Fatalf("public line %q", line)
	}
	for p, mode := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + ".pub": 0o644} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode().Perm(), err, mode)
		}
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != line+"\n" {
		t.Errorf(".pub holds %q", b)
	}
	// An existing key is kept; a lost .pub comes back from it.
	again, err := Ensure(path, "other")
	if err != nil || again != line {
		t.Fatalf("second Ensure: %q, %v; want %q", again, err, line)
	}
	os.Remove(path + ".pub")
	again, err = Ensure(path, "other")
	if err != nil || strings.Fields(again)[1] != strings.Fields(line)[1] {
		t.Fatalf("Ensure without .pub: %q, %v; want the key of %q", again, err, line)
	}
	if _, err := os.Stat(path + ".pub"); err != nil {
		t.Errorf(".pub not rewritten: %v", err)
	}
	// Garbage at path is an error, and is left alone.
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := Ensure(path, "bangerd"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Ensure over garbage: %v", err)
	}
}

// TestEnsureReadsSSHKeygenKeys: a daemon key made by ssh-keygen (as banger
// made it before) is used as it is.
func TestEnsureReadsSSHKeygenKeys(t *testing.T) {
	keygen := testhost.NeedTools(t, "ssh-keygen")["ssh-keygen"]
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "bangerd", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	want, _ := os.ReadFile(path + ".pub")
	got, err := Ensure(path, "bangerd")
	if err != nil || got != strings.TrimSpace(string(want)) {
		t.Fatalf("Ensure: %q, %v; want %q", got, err, want)
	}
}
