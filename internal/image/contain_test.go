package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/scripts"
)

// watchedHost is a set of host files and folders a hostile image aims at,
// and a snapshot of them.
type watchedHost struct {
	dir     string
	secret  string // a root-only (or user-only) file, as the daemon's SSH key is
	markers []string
	before  map[string]string
}

func newWatchedHost(t *testing.T) *watchedHost {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	w := &watchedHost{dir: dir}
	for _, d := range []string{"etcssh", "rootdir", "state"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "etcssh", "sshd_config"), []byte("host sshd_config\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "rootdir", "keep"), []byte("host file\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte("host sshd_config file\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "hostname"), []byte("the-host\n"), 0o644)
	var b [24]byte
	rand.Read(b[:])
	w.secret = filepath.Join(dir, "state", "id_ed25519")
	os.WriteFile(w.secret, []byte("BANGER-TEST-SECRET-"+hex.EncodeToString(b[:])+"\n"), 0o600)
	os.Chmod(filepath.Join(dir, "state"), 0o700)
	w.markers = []string{filepath.Join(dir, "state", "marker"), filepath.Join(dir, "marker"),
		fmt.Sprintf("/tmp/banger-attack-marker-%d", os.Getpid())}
	w.before = w.snapshot(t)
	return w
}

// targets is the attacker's /attacker-targets.
func (w *watchedHost) targets() string {
	var sb strings.Builder
	for _, m := range w.markers {
		fmt.Fprintf(&sb, "write %s\n", m)
	}
	fmt.Fprintf(&sb, "write %s\nread %s\n", filepath.Join(w.dir, "etcssh", "sshd_config"), w.secret)
	return sb.String()
}

func (w *watchedHost) snapshot(t *testing.T) map[string]string {
	t.Helper()
	snap := map[string]string{}
	filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := d.Info()
		desc := fmt.Sprintf("%v %v", fi.Mode(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		}
		snap[p] = desc
		return nil
	})
	return snap
}

// check fails t when a watched path changed, a marker exists, or file (a
// built image) holds the secret.
func (w *watchedHost) check(t *testing.T, image string) {
	t.Helper()
	after := w.snapshot(t)
	for p, b := range w.before {
		if after[p] != b {
			t.Errorf("host path %s changed: %q => %q", p, b, after[p])
		}
	}
	for p := range after {
		if _, ok := w.before[p]; !ok {
			t.Errorf("host path %s appeared", p)
		}
	}
	for _, m := range w.markers {
		if _, err := os.Lstat(m); err == nil {
			t.Errorf("marker %s exists: the image wrote on the host", m)
			os.Remove(m)
		}
	}
	secret, _ := os.ReadFile(w.secret)
	if b, err := os.ReadFile(image); err == nil && bytes.Contains(b, bytes.TrimSpace(secret)) {
		t.Errorf("the built image %s holds the host's secret", image)
	}
}

// hostileBase is a root file system that customize.sh finds complete (stub
// programs for sshd, systemd, ip, D-Bus, kmod, udev) but for what lacking
// removes, with busybox applets for the script's tools and the attacker's
// targets.
func hostileBase(t *testing.T, w *watchedHost, lacking ...string) []tarEntry {
	t.Helper()
	entries := baseEntries(t)
	for _, a := range []string{"cat", "chmod", "chown", "cp", "dirname", "grep", "ln", "mkdir", "mv", "rm", "sed", "tr", "touch", "cmp"} {
		entries = append(entries, tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/" + a, Linkname: "busybox"}, ""})
	}
	entries = append(entries,
		tarEntry{tar.Header{Typeflag: tar.TypeDir, Name: "usr/sbin/", Mode: 0o755}, ""},
		tarEntry{tar.Header{Typeflag: tar.TypeDir, Name: "usr/lib/systemd/", Mode: 0o755}, ""},
		tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "sbin", Linkname: "usr/sbin"}, ""},
		tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "lib", Linkname: "usr/lib"}, ""},
		tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: "attacker-targets", Mode: 0o644}, w.targets()},
	)
	stubs := map[string]string{"sshd": "usr/sbin/sshd", "systemd": "usr/lib/systemd/systemd", "ip": "usr/sbin/ip",
		"dbus": "usr/bin/dbus-daemon", "kmod": "usr/bin/kmod", "udev": "usr/lib/systemd/systemd-udevd"}
	for what, p := range stubs {
		if !strings.Contains(strings.Join(lacking, " "), what) {
			entries = append(entries, tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o755}, "#!/bin/sh\n"})
		}
	}
	entries = append(entries, tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/sbin/init", Linkname: "../lib/systemd/systemd"}, ""})
	return entries
}

// TestBuildContainsHostileImages builds trees made to attack the host
// (symlinks at watched host files and folders, a program as the image's
// systemctl and apt-get that tries every way out) with the real
// customize.sh: a build may fail or succeed, but no watched host path
// changes, no marker appears and the image holds no host secret.
func TestBuildContainsHostileImages(t *testing.T) {
	ids := needRootfsTools(t)
	attacker, err := os.ReadFile(testhost.Attacker(t, repoFile(t, ".")))
	if err != nil {
		t.Fatal(err)
	}
	scriptDir, err := scripts.WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchedHost(t)
	abs := func(p string) string { return filepath.Join(w.dir, p) }
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		program bool // the attacker must have run
	}{
		{"symlinks at host files and a hostile systemctl", append(hostileBase(t, w),
			tarEntry{tar.Header{Typeflag: tar.TypeDir, Name: "etc/ssh/", Mode: 0o755}, ""},
			tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/ssh/sshd_config", Linkname: abs("sshd_config")}, ""},
			tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/hostname", Linkname: abs("hostname")}, ""},
			tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/systemctl", Mode: 0o755}, string(attacker)},
		), true},
		{"symlinks at host folders and a hostile apt-get", append(hostileBase(t, w, "sshd"),
			tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/ssh", Linkname: abs("etcssh")}, ""},
			tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/apt-get", Mode: 0o755}, string(attacker)},
		), true},
		{"root and machine-id at host paths", append(hostileBase(t, w),
			tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/machine-id", Linkname: abs("machine-id")}, ""},
			tarEntry{tar.Header{Typeflag: tar.TypeSymlink, Name: "root", Linkname: "../../../../../../" + abs("rootdir")}, ""},
		), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.ext4")
			var log bytes.Buffer
			err := BuildRootfs(context.Background(), RootfsOptions{Tar: writeTar(tc.entries), Output: out, Scripts: scriptDir,
				IDs: ids, TempDir: t.TempDir(), Log: &log, SSHPubKey: "ssh-ed25519 AAAA test"})
			t.Logf("build: %v", err)
			if tc.program && !strings.Contains(log.String(), "attacker: done") {
				t.Errorf("the hostile program did not run:\n%s", log.String())
			}
			for _, l := range strings.Split(log.String(), "\n") {
				if strings.Contains(l, "attacker:") {
					t.Log(l)
				}
			}
			w.check(t, out)
		})
	}
}
