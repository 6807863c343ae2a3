// Package image builds and prepares banger's root disk images: raw ext4 files
// that a VM boots from as /dev/vda.
//
// Every build is one pipeline: a tar stream (a flattened OCI image, a rootfs
// tarball, or Debian from mmdebstrap: BuildDebian) goes into a build sandbox
// (package sandbox), which extracts it, runs scripts/customize.sh with the
// image's own shell and makes the ext4 image (BuildRootfs). CloneDisk makes
// a VM's private copy of an image (copy-on-write or sparse) and grows it.
// InjectFiles writes per-VM files, such as SSH host keys, into an unmounted
// image with debugfs.
//
// Everything here shells out to e2fsprogs and friends; the functions check for
// the tools first and name the Debian package that provides a missing one
// (see ErrMissingTool).
package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// ErrMissingTool is wrapped by the errors returned when a host tool that an
// operation needs is not installed. The message names the tool and the
// Debian package to install.
var ErrMissingTool = errors.New("missing host tool")

// tool is a host program and the Debian package that provides it.
type tool struct {
	name string
	pkg  string
}

var (
	toolMmdebstrap = tool{"mmdebstrap", "mmdebstrap"}
	toolMkfs       = tool{"mkfs.ext4", "e2fsprogs"}
	toolE2fsck     = tool{"e2fsck", "e2fsprogs"}
	toolResize2fs  = tool{"resize2fs", "e2fsprogs"}
	toolDebugfs    = tool{"debugfs", "e2fsprogs"}
	toolNewuidmap  = tool{"newuidmap", "uidmap"}
	toolNewgidmap  = tool{"newgidmap", "uidmap"}
)

// sbinDirs are searched after PATH: e2fsprogs lives in /usr/sbin, which an
// ordinary user's PATH often lacks.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// lookTool returns the absolute path of t, or an error wrapping ErrMissingTool.
func lookTool(t tool) (string, error) {
	if p, err := exec.LookPath(t.name); err == nil {
		return filepath.Abs(p)
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, t.name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found (install it: apt-get install %s)", ErrMissingTool, t.name, t.pkg)
}

// lookTools resolves every tool, reporting all missing ones at once.
func lookTools(ts ...tool) (map[string]string, error) {
	paths := make(map[string]string, len(ts))
	var errs []error
	for _, t := range ts {
		p, err := lookTool(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		paths[t.name] = p
	}
	return paths, errors.Join(errs...)
}

// run runs a command and returns its combined output. A failure is reported
// with the command name, exit status and the last lines of output.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := runBound(cmd)
	if err != nil {
		return out.Bytes(), commandError(ctx, name, err, out.Bytes())
	}
	return out.Bytes(), nil
}

// runBound runs cmd (from exec.CommandContext) in a process group of its
// own, so cancelling also ends helpers it started, and with a parent-death
// signal, so it does not outlive this process either. The signal follows
// the thread that forks: the goroutine keeps its thread until cmd is done.
func runBound(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Run()
}

// commandError describes a failed command: its base name, why it stopped and
// the tail of what it printed.
func commandError(ctx context.Context, name string, err error, output []byte) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(name), ctxErr)
	}
	if tail := lastLines(output, 15); tail != "" {
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, tail)
	}
	return fmt.Errorf("%s: %w", filepath.Base(name), err)
}

// lastLines returns at most n trailing non-empty lines of b, joined by " | ".
func lastLines(b []byte, n int) string {
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Size returns the apparent size of the file at path (what stat reports as
// its length) and the bytes actually allocated on disk, which is smaller for
// a sparse file.
func Size(path string) (apparent, allocated int64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", path, &fs.PathError{Op: "stat", Path: path, Err: err})
	}
	return st.Size, st.Blocks * 512, nil
}

// syncDir fsyncs a directory so that a rename into it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeAll removes path like os.RemoveAll, first making directories
// writable: a root filesystem tree extracted without root has read-only
// directories that would otherwise stop the removal.
func removeAll(path string) error {
	if err := os.RemoveAll(path); err == nil {
		return nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}
