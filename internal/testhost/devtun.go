package testhost

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// DevTUN returns the path of a private, world-accessible device node for
// the TUN/TAP clone device (char 10:200), in a folder of its own (mode
// 0755). Distributions make /dev/net/tun mode 0666, but some hosts (this
// CI machine among them) have it 0600, and tests must not change the
// host's /dev; the node is the same device, so the kernel's checks on a
// TAP's owner are what a test exercises. It needs root (Skip otherwise, or
// when the file system does not allow device nodes).
func DevTUN(t testing.TB) string {
	t.Helper()
	NeedRoot(t, "making a device node needs CAP_MKNOD")
	dir, err := os.MkdirTemp("", "bgrt-tun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tun")
	if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		Skip(t, "skipping: cannot make a private /dev/net/tun node in %s: %v", dir, err)
	}
	if err := os.Chmod(path, 0o666); err != nil { // mknod applies the umask
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		Skip(t, "skipping: the filesystem of %s does not allow device nodes (nodev?): %v", dir, err)
	}
	unix.Close(fd)
	return path
}
