package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/units"
)

// DefaultMirror is the Debian mirror BuildDebian uses when none is given.
const DefaultMirror = "http://deb.debian.org/debian"

// BasePackages are always installed into a Debian image; the customize script
// relies on them (sshd, systemd as init, ip, udev to load modules).
var BasePackages = []string{"openssh-server", "systemd-sysv", "iproute2", "udev", "kmod", "dbus"}

// debianPackageName is Debian policy's package name syntax (no version or
// architecture suffixes: they would be passed to mmdebstrap's --include).
var debianPackageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// DebianOptions describes a Debian image build.
type DebianOptions struct {
	// Release is the Debian suite or codename, such as "bookworm". Required.
	Release string
	// Mirror is the Debian mirror URL; DefaultMirror when empty.
	Mirror string
	// Packages are installed in addition to BasePackages.
	Packages []string
	// Output is the path of the ext4 image to create. Its folder must exist;
	// an existing file there is replaced only when the build succeeds.
	Output string
	// CustomizeScript is the path of scripts/customize.sh. Required. It runs
	// as mmdebstrap's customize hook, with the root filesystem as $1.
	CustomizeScript string
	// ModulesDir is the runtime's kernel/modules folder (holding
	// lib/modules/<release>), passed to the script as BANGER_MODULES_DIR.
	// Optional: without it the image has no kernel modules.
	ModulesDir string
	// SSHPubKey is one public key line for root's authorized_keys, passed to
	// the script as BANGER_SSH_PUBKEY. Optional.
	SSHPubKey string
	// AgentBinary is the guest agent (banger-vsock-pingd) from the runtime
	// bundle, passed to the script as BANGER_AGENT_BIN; the script installs
	// it with its systemd unit. Optional.
	AgentBinary string
	// Log receives progress lines: phases, mmdebstrap's own output, timings.
	// Nil discards them.
	Log io.Writer
	// TempDir holds the tarball and the extracted tree during the build
	// (several hundred MB); os.TempDir() when empty.
	TempDir string
}

// CheckDebianTools reports, in one error wrapping ErrMissingTool, every host
// tool that BuildDebian needs and cannot find, with the Debian package that
// provides it. It returns nil when all are present.
func CheckDebianTools() error {
	_, err := debianTools()
	return err
}

func debianTools() (map[string]string, error) {
	ts := []tool{toolMmdebstrap, toolFakeroot, toolMkfs, toolTar, toolDebugfs, toolE2fsck}
	if os.Geteuid() != 0 {
		// Rootless mmdebstrap maps the subordinate ids with newuidmap.
		ts = append(ts, toolNewuidmap)
	}
	return lookTools(ts...)
}

// BuildDebian builds a bootable ext4 image of Debian opts.Release at
// opts.Output, without root privileges and without mounting anything:
//
//  1. mmdebstrap --mode=unshare --variant=minbase writes a tarball, running
//     opts.CustomizeScript as its customize hook;
//  2. under one fakeroot session, the tarball is extracted (ownership, modes,
//     device nodes kept) and mkfs.ext4 -d copies the tree into a sparse image
//     sized to the content plus headroom (used*1.25 + 256 MiB, rounded up to
//     64 MiB), labelled banger-root;
//  3. the image, built under a temporary name in Output's folder, is renamed
//     to opts.Output.
//
// It fails early, with an error wrapping ErrMissingTool, when a needed host
// tool is missing. Everything temporary is removed whether the build
// succeeds, fails or ctx is cancelled (mmdebstrap gets SIGTERM so it can undo
// its own work, then SIGKILL).
func BuildDebian(ctx context.Context, opts DebianOptions) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			err = fmt.Errorf("build debian %s image: %w", opts.Release, err)
		}
	}()
	if err := opts.fill(); err != nil {
		return err
	}
	tools, err := debianTools()
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "image: "+format+"\n", args...)
	}
	slog.Debug("building debian image", "component", "image", "release", opts.Release, "output", opts.Output)

	work, err := os.MkdirTemp(opts.TempDir, "banger-debian-*")
	if err != nil {
		return err
	}
	// Rootless mmdebstrap works in here as a subordinate uid, which must be
	// able to enter the folder.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	defer func() {
		if rmErr := removeAll(work); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove temporary files: %w", rmErr))
		}
	}()

	// 1. Root filesystem tarball.
	tarball := filepath.Join(work, "rootfs.tar")
	phase := time.Now()
	logf("mmdebstrap %s from %s (packages: %s)", opts.Release, opts.Mirror, strings.Join(opts.packages(), ","))
	if err := opts.mmdebstrap(ctx, tools["mmdebstrap"], work, tarball); err != nil {
		return err
	}
	logf("mmdebstrap done in %s", since(phase))

	// 2. Size it, then extract and make the file system in one fakeroot.
	used, inodes, err := tarUsage(tarball)
	if err != nil {
		return err
	}
	size := imageSize(used)
	logf("content %s in %d inodes: image size %s", units.IEC(used), inodes, units.IEC(size))

	imgPath, err := tempImage(opts.Output)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(imgPath)
		}
	}()

	phase = time.Now()
	tree := filepath.Join(work, "rootfs")
	mkfsArgs := []string{"-q", "-F", "-L", "banger-root", "-d", tree}
	if n := inodeCount(size, inodes); n > 0 {
		mkfsArgs = append(mkfsArgs, "-N", fmt.Sprint(n))
	}
	mkfsArgs = append(mkfsArgs, imgPath)
	script := `set -e
mkdir "$1"
"$2" -xpf "$3" -C "$1" --numeric-owner
truncate -s "$4" "$5"
shift 5
exec "$@"`
	args := append([]string{"sh", "-c", script, "fakeroot-build",
		tree, tools["tar"], tarball, fmt.Sprint(size), imgPath, tools["mkfs.ext4"]}, mkfsArgs...)
	if out, err := run(ctx, tools["fakeroot"], args...); err != nil {
		return fmt.Errorf("extract and mkfs.ext4 under fakeroot: %w", err)
	} else if len(out) > 0 {
		logf("fakeroot: %s", lastLines(out, 10))
	}
	logf("extract + mkfs.ext4 done in %s", since(phase))

	// Extended attributes (file capabilities) do not survive fakeroot's
	// extraction (see oci.ReadXattrs): set them on the image itself.
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	xattrs, err := oci.ReadXattrs(bufio.NewReaderSize(f, 1<<20))
	f.Close()
	if err != nil {
		return err
	}
	if err := applyHeldBack(ctx, tools, work, imgPath, &heldBack{xattrs: xattrs}); err != nil {
		return err
	}
	for _, x := range xattrs {
		logf("extended attribute %s on /%s", x.Name, x.Path)
	}

	if err := publish(imgPath, opts.Output); err != nil {
		return err
	}
	_, alloc, _ := Size(opts.Output)
	logf("built %s: %s, %s allocated, in %s", opts.Output, units.IEC(size), units.IEC(alloc), since(start))
	return nil
}

// fill validates opts and sets defaults.
func (o *DebianOptions) fill() error {
	if o.Release == "" {
		return errors.New("no release given (for example bookworm)")
	}
	if o.Output == "" {
		return errors.New("no output path given")
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	for _, p := range o.Packages {
		if !debianPackageName.MatchString(p) {
			return fmt.Errorf("%q is not a Debian package name", p)
		}
	}
	if strings.ContainsAny(o.SSHPubKey, "\n\r") {
		return errors.New("SSH public key must be a single line")
	}
	var err error
	if o.Output, err = filepath.Abs(o.Output); err != nil {
		return err
	}
	if o.CustomizeScript == "" {
		return errors.New("no customize script given (scripts/customize.sh)")
	}
	// The hook runs with mmdebstrap's working directory; paths must be absolute.
	if o.CustomizeScript, err = filepath.Abs(o.CustomizeScript); err != nil {
		return err
	}
	if _, err := os.Stat(o.CustomizeScript); err != nil {
		return fmt.Errorf("customize script: %w", err)
	}
	if o.ModulesDir != "" {
		if o.ModulesDir, err = filepath.Abs(o.ModulesDir); err != nil {
			return err
		}
		if st, err := os.Stat(filepath.Join(o.ModulesDir, "lib", "modules")); err != nil || !st.IsDir() {
			return fmt.Errorf("modules dir %s has no lib/modules (build it with scripts/make-runtime.sh)", o.ModulesDir)
		}
	}
	if st, err := os.Stat(filepath.Dir(o.Output)); err != nil || !st.IsDir() {
		return fmt.Errorf("output folder %s does not exist", filepath.Dir(o.Output))
	}
	return nil
}

func (o *DebianOptions) packages() []string {
	return append(append([]string(nil), BasePackages...), o.Packages...)
}

// mmdebstrap runs mmdebstrap into tarball, streaming its output to o.Log.
// On cancellation it sends SIGTERM to mmdebstrap's process group (mmdebstrap
// then removes its own temporary root), and SIGKILL after a grace period.
func (o *DebianOptions) mmdebstrap(ctx context.Context, bin, work, tarball string) error {
	args := []string{
		"--mode=unshare",
		"--variant=minbase",
		"--include=" + strings.Join(o.packages(), ","),
		"--customize-hook=sh " + shellQuote(o.CustomizeScript) + ` "$1"`,
		o.Release, tarball, o.Mirror,
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = work
	// Its temporary root lands in work, which is removed in any case.
	cmd.Env = append(os.Environ(),
		"TMPDIR="+work,
		"BANGER_MODULES_DIR="+o.ModulesDir,
		"BANGER_SSH_PUBKEY="+o.SSHPubKey,
		"BANGER_AGENT_BIN="+o.AgentBinary,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 30 * time.Second

	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	tail := &tailBuffer{max: 20}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(o.Log, "mmdebstrap: %s\n", sc.Text())
			tail.add(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()

	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
		// Whatever is left of the group (apt, dpkg, unshare helpers) goes too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	pw.Close()
	wg.Wait()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("mmdebstrap: %w", ctxErr)
		}
		return fmt.Errorf("mmdebstrap: %w: %s", err, tail.String())
	}
	return nil
}

// tarUsage estimates the ext4 space (in bytes, 4 KiB blocks) and the inodes
// that the tree in tarball will take.
func tarUsage(tarball string) (used, inodes int64, err error) {
	f, err := os.Open(tarball)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	const block = 4096
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read %s: %w", tarball, err)
		}
		switch h.Typeflag {
		case tar.TypeLink:
			continue // another name for an inode already counted
		case tar.TypeReg, tar.TypeDir:
			used += (h.Size + block - 1) / block * block
			if h.Typeflag == tar.TypeDir {
				used += block
			}
		case tar.TypeSymlink:
			if len(h.Linkname) >= 60 { // longer targets need a block
				used += block
			}
		}
		inodes++
	}
	return used, inodes, nil
}

// inodeCount is the -N to give mkfs.ext4 for an image of size bytes holding
// inodes inodes, or 0 when its default (one inode per 16 KiB) leaves enough
// room: a tree of many small files may need more.
func inodeCount(size, inodes int64) int64 {
	if size/16384 < inodes*3/2 {
		return inodes * 2
	}
	return 0
}

// imageSize is the image file size for content of used bytes: 25% plus
// 256 MiB of headroom (journal, metadata, room to install a few packages),
// rounded up to 64 MiB.
func imageSize(used int64) int64 {
	const mib = 1 << 20
	size := used + used/4 + 256*mib
	return (size + 64*mib - 1) / (64 * mib) * (64 * mib)
}

// tempImage creates an empty file beside output, under a hidden temporary
// name, for an image being built; publish moves it into place.
func tempImage(output string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".*.tmp")
	if err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// publish makes the finished image tmp durable and readable (a base image
// holds no secrets: host keys come per VM) and renames it to output.
func publish(tmp, output string) error {
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, output); err != nil {
		return err
	}
	return syncDir(filepath.Dir(output))
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func since(t time.Time) string {
	return time.Since(t).Round(100 * time.Millisecond).String()
}

// tailBuffer keeps the last max lines written to it, for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}
