package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestBuildContainment builds hostile images with a root daemon, one per
// attack class of issue 10: a static program installed as the image's
// systemctl and apt-get that tries to leave the build sandbox and to write
// or read host paths (markers in /tmp and in the daemon's state folder, the
// daemon's SSH key, through /proc/1/root, ../.., a chroot escape); image
// symlinks at watched host folders and files; an extended attribute name of
// ~10,000 bytes carrying a debugfs "!" command; a device node whose name
// carries one; a layer holding a 1 TiB sparse file. A build may fail or
// succeed; afterwards every watched host path is unchanged, no marker
// exists, no built image holds the host secret, the disk is not filled, and
// no build left a process, folder or row.
func TestBuildContainment(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.debianImage(ctx)
	base := e.imageShow(ctx, "default").Path

	// The host paths the images aim at.
	watched := filepath.Join(e.root, "watched")
	for _, d := range []string{"etcssh", "rootdir"} {
		os.MkdirAll(filepath.Join(watched, d), 0o755)
	}
	os.WriteFile(filepath.Join(watched, "etcssh", "sshd_config"), []byte("host sshd_config\n"), 0o644)
	os.WriteFile(filepath.Join(watched, "rootdir", "keep"), []byte("host file\n"), 0o644)
	for _, f := range []string{"machine-id", "sshd_config", "hostname"} {
		os.WriteFile(filepath.Join(watched, f), []byte("host "+f+"\n"), 0o644)
	}
	stateDir := filepath.Join(e.root, "state", "banger")
	key := filepath.Join(stateDir, "ssh", "id_ed25519")
	secret, err := os.ReadFile(key)
	if err != nil {
		t.Fatalf("the daemon's SSH key: %v", err)
	}
	secret = bytes.TrimSpace(secret)
	var rnd [6]byte
	rand.Read(rnd[:])
	markers := []string{filepath.Join(stateDir, "attack-marker"), filepath.Join(watched, "marker"),
		"/tmp/banger-e2e-attack-" + hex.EncodeToString(rnd[:]), "/root/banger-e2e-attack-" + hex.EncodeToString(rnd[:])}
	var targets strings.Builder
	for _, m := range markers {
		fmt.Fprintf(&targets, "write %s\n", m)
	}
	fmt.Fprintf(&targets, "write %s\nread %s\nread %s\n", filepath.Join(watched, "hostname"), key, filepath.Join(stateDir, "banger.db"))
	before := snapshotTree(t, watched)
	keyBefore := snapshotTree(t, filepath.Join(stateDir, "ssh"))
	check := func(t *testing.T, built string) {
		t.Helper()
		if diff := diffSnapshots(before, snapshotTree(t, watched)); diff != "" {
			t.Errorf("watched host paths changed:\n%s", diff)
		}
		if diff := diffSnapshots(keyBefore, snapshotTree(t, filepath.Join(stateDir, "ssh"))); diff != "" {
			t.Errorf("the daemon's SSH key folder changed:\n%s", diff)
		}
		for _, m := range markers {
			if _, err := os.Lstat(m); err == nil {
				t.Errorf("marker %s exists: the image wrote on the host", m)
				os.Remove(m)
			}
		}
		if built != "" {
			if b, err := os.ReadFile(built); err != nil {
				t.Errorf("read the built image: %v", err)
			} else if bytes.Contains(b, secret) {
				t.Errorf("the built image %s holds the daemon's SSH key", built)
			}
		}
		if pids := e.sandboxProcesses(); len(pids) > 0 {
			t.Errorf("sandbox processes left: %v", pids)
		}
	}

	attacker, err := os.ReadFile(testhost.Attacker(t, e.repo))
	if err != nil {
		t.Fatal(err)
	}
	debian, _ := debianLayer(t, base, nil)
	long := "user." + strings.Repeat("x", 10000) + "\n!touch " + markers[2] + "\n"
	dir := t.TempDir()
	archive := func(file string, layers ...v1.Layer) string {
		p := filepath.Join(dir, file)
		if err := tarball.WriteToFile(p, name.MustParseReference("banger/hostile:v1"), withPlatform(t, appendLayers(t, layers...), "amd64")); err != nil {
			t.Fatal(err)
		}
		return "docker-archive:" + p
	}
	etcOnly := headerLayer(t, tarItem{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}})

	// Not hostile: an image without openssh-server (as dpkg sees it), which
	// customize.sh installs with the image's apt-get through the sandbox's
	// network (a veth on the bridge; Debian's mirror is the one place the
	// tests may reach).
	noSSHD, _ := debianLayer(t, base, func(tree string) {
		os.Remove(filepath.Join(tree, "usr/sbin/sshd"))
		status := filepath.Join(tree, "var/lib/dpkg/status")
		b, err := os.ReadFile(status)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, para := range strings.Split(string(b), "\n\n") {
			if !strings.HasPrefix(para, "Package: openssh-server\n") {
				kept = append(kept, para)
			}
		}
		os.WriteFile(status, []byte(strings.Join(kept, "\n\n")), 0o644)
	})
	start := time.Now()
	e.must(ctx, "image", "build", "needs-sshd", "--no-cache", "--quiet", "--from", archive("needs-sshd.tar", noSSHD))
	t.Logf("image build needs-sshd (apt-get install openssh-server in the sandbox): %s", time.Since(start).Round(100*time.Millisecond))
	if out, err := exec.Command("debugfs", "-R", "stat /usr/sbin/sshd", e.imageShow(ctx, "needs-sshd").Path).CombinedOutput(); err != nil || !strings.Contains(string(out), "Type: regular") {
		t.Errorf("the image built without sshd did not get it: %v\n%s", err, out)
	}
	e.must(ctx, "image", "rm", "needs-sshd")

	for _, tc := range []struct {
		name, from string
		want       string // in the error of a build that must fail; "" may succeed
	}{
		{"hostile-systemctl", archive("systemctl.tar", debian, headerLayer(t,
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/systemctl", Mode: 0o755}, body: string(attacker)},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "attacker-targets", Mode: 0o644}, body: targets.String()},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/ssh/.wh.sshd_config"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/ssh/sshd_config", Linkname: filepath.Join(watched, "sshd_config")}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.hostname"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/hostname", Linkname: filepath.Join(watched, "hostname")}},
		)), ""},
		{"hostile-apt", archive("apt.tar", debian, headerLayer(t,
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/sbin/.wh.sshd"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/apt-get", Mode: 0o755}, body: string(attacker)},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "attacker-targets", Mode: 0o644}, body: targets.String()},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.ssh"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/ssh", Linkname: filepath.Join(watched, "etcssh")}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: ".wh.root"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "root", Linkname: filepath.Join(watched, "rootdir")}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.machine-id"}},
			tarItem{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/machine-id", Linkname: filepath.Join(watched, "machine-id")}},
		)), "customize.sh"},
		{"hostile-xattr", archive("xattr.tar", etcOnly, headerLayer(t,
			tarItem{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/x", Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr." + long: "v"}}, body: "x"},
		)), "a name of 10"},
		{"hostile-devnode", archive("devnode.tar", etcOnly, headerLayer(t,
			tarItem{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/x\n!touch " + markers[2], Mode: 0o666, Devmajor: 1, Devminor: 3}},
		)), "control character"},
		{"hostile-sparse", archive("sparse.tar", etcOnly, rawLayer(t, testhost.SparseTar("huge", 1<<40))), "larger than a build may be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			free := freeBytes(t, e.root)
			start := time.Now()
			r := e.banger(ctx, "image", "build", tc.name, "--from", tc.from, "--no-cache", "--progress=plain")
			t.Logf("image build %s: exit %d in %s", tc.name, r.code, time.Since(start).Round(100*time.Millisecond))
			for _, l := range strings.Split(r.stderr, "\n") {
				if strings.Contains(l, "attacker:") || strings.Contains(l, "rror") {
					t.Log(l)
				}
			}
			built := ""
			if r.code == 0 {
				if tc.want != "" {
					t.Errorf("the build succeeded, want a failure saying %q", tc.want)
				}
				built = e.imageShow(ctx, tc.name).Path
			} else {
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
				}
				// A refused build leaves nothing, and fills nothing.
				if lost := free - freeBytes(t, e.root); lost > 256<<20 {
					t.Errorf("the failed build left %d MiB less free space", lost>>20)
				}
			}
			check(t, built)
			if built != "" {
				e.must(ctx, "image", "rm", tc.name)
			}
		})
	}
	assertNoImageLeaks(ctx, t, e)
}

// freeBytes is the free space of dir's file system.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// tarItem is one entry of headerLayer.
type tarItem struct {
	hdr  tar.Header
	body string
}

// headerLayer is a layer of the given entries (any type, PAX records kept).
func headerLayer(t *testing.T, items ...tarItem) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, it := range items {
		h := it.hdr
		h.Size = int64(len(it.body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, it.body)
	}
	tw.Close()
	return rawLayer(t, buf.Bytes())
}

// rawLayer is a layer whose uncompressed tar is b (an end marker is added).
func rawLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	if !bytes.HasSuffix(b, make([]byte, 1024)) {
		b = append(b, make([]byte, 1024)...)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// snapshotTree describes every file under dir: mode, mtime and content.
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		desc := fmt.Sprintf("%v %d", fi.Mode(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			desc += fmt.Sprintf(" %q", b)
		}
		snap[p] = desc
		return nil
	})
	return snap
}

// diffSnapshots lists what differs between two snapshotTree results.
func diffSnapshots(a, b map[string]string) string {
	var out []string
	for p, v := range a {
		if w, ok := b[p]; !ok {
			out = append(out, "removed "+p)
		} else if w != v {
			out = append(out, "changed "+p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out = append(out, "added "+p)
		}
	}
	return strings.Join(out, "\n")
}
