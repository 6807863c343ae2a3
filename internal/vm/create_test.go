package vm

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
)

// newCreateService is newTestService with what vm create needs: a runtime
// bundle's kernel files (stand-ins: nothing boots) and an image "default",
// a real small ext4 file system with the folders a guest has.
func newCreateService(t *testing.T) (*Service, map[string]string) {
	t.Helper()
	tools := testhost.NeedTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "debugfs", "ssh-keygen")
	s := newSleepService(t, &sleepDriver{})
	rt := t.TempDir()
	for _, p := range []string{"kernel/vmlinux", "kernel/initrd.img", "kernel/release", "kernel/modules/.keep"} {
		os.MkdirAll(filepath.Dir(filepath.Join(rt, p)), 0o755)
		os.WriteFile(filepath.Join(rt, p), []byte("stand-in\n"), 0o644)
	}
	tree := t.TempDir()
	for _, d := range []string{"etc/ssh", "root/.ssh"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command(tools["mkfs.ext4"], "-q", "-F", "-d", tree, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	st, _ := os.Stat(img)
	if err := store.InsertImage(context.Background(), s.store.DB, &store.Image{ID: "img1", Name: "default", Source: "test", Path: img, SizeBytes: st.Size()}); err != nil {
		t.Fatal(err)
	}
	s.cfg.Runtime = bundle.Dir{Path: rt}
	s.cfg.Subnet = netip.MustParsePrefix("10.99.0.0/24")
	s.cfg.DefaultVMM, s.cfg.DefaultImage = "sleep", "default"
	s.cfg.DefaultCPUs, s.cfg.DefaultMemoryMiB, s.cfg.DefaultDiskBytes = 1, 256, MinDiskBytes
	s.cfg.SSHPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench00 bangerd"
	return s, tools
}

// debugfsCat reads path from the ext4 image disk.
func debugfsCat(t *testing.T, debugfs, disk, path string) string {
	t.Helper()
	out, err := exec.Command(debugfs, "-R", "cat "+path, disk).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// TestCreateMakesKeys: a created VM's disk holds its own host key (made in
// Go, read by OpenSSH's ssh-keygen) and the daemon's key; the host pins the
// host key for the VM's address.
func TestCreateMakesKeys(t *testing.T) {
	s, tools := newCreateService(t)
	ctx := context.Background()
	v, err := s.Create(ctx, api.VMCreateParams{Name: "dev", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	disk := s.diskPath(v.ID)
	priv := debugfsCat(t, tools["debugfs"], disk, "/etc/ssh/ssh_host_ed25519_key")
	pub := debugfsCat(t, tools["debugfs"], disk, "/etc/ssh/ssh_host_ed25519_key.pub")
	if auth := debugfsCat(t, tools["debugfs"], disk, "/root/.ssh/authorized_keys"); auth != s.cfg.SSHPublicKey+"\n" {
		t.Errorf("authorized_keys = %q", auth)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte(priv), 0o600)
	derived, err := exec.Command(tools["ssh-keygen"], "-y", "-f", keyFile).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen cannot read the host key: %v: %s", err, derived)
	}
	f := strings.Fields(pub)
	if len(f) != 3 || f[2] != "root@dev" || !strings.HasPrefix(string(derived), f[0]+" "+f[1]) {
		t.Fatalf("host key .pub %q does not match its private key (%q)", pub, derived)
	}
	kh, err := os.ReadFile(s.knownHosts(v.ID))
	if err != nil || string(kh) != v.IP+" "+f[0]+" "+f[1]+"\n" {
		t.Errorf("known_hosts = %q, %v", kh, err)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Dirs.VMDir(v.ID), "ssh_host_ed25519_key")); err == nil {
		t.Error("the host keeps the VM's private host key")
	}
}

// TestCreateRefusesBadValues: out-of-range values sent straight to the
// service (as any client may) are refused with what to use, and leave no
// row, lease or folder.
func TestCreateRefusesBadValues(t *testing.T) {
	s, _ := newCreateService(t)
	ctx := context.Background()
	for _, tc := range []struct {
		p    api.VMCreateParams
		want string
	}{
		{api.VMCreateParams{Name: "a", CPUs: -1}, "--cpus -1 is out of range"},
		{api.VMCreateParams{Name: "a", MemoryMiB: -5}, "--memory -5 MiB is out of range"},
		{api.VMCreateParams{Name: "a", MemoryMiB: 64}, "--memory 64 MiB is out of range"},
		{api.VMCreateParams{Name: "a", DiskBytes: -1}, "is below the least a VM disk can be: use at least 256 MiB"},
		{api.VMCreateParams{Name: "a", DiskBytes: 1 << 20}, "--disk 1 MiB is below the least a VM disk can be"},
		{api.VMCreateParams{Name: "Bad_Name"}, "invalid VM name"},
	} {
		_, err := s.Create(ctx, tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, api.ErrInvalid) {
			t.Errorf("create %+v: error %v, want an invalid-argument error with %q", tc.p, err, tc.want)
		}
	}
	var rows, leases int
	s.store.DB.QueryRow("SELECT COUNT(*) FROM vms").Scan(&rows)
	s.store.DB.QueryRow("SELECT COUNT(*) FROM leases").Scan(&leases)
	entries, _ := os.ReadDir(s.cfg.Dirs.VMsDir())
	if rows != 0 || leases != 0 || len(entries) != 0 {
		t.Errorf("refused creates left %d rows, %d leases, %d folders", rows, leases, len(entries))
	}
}
