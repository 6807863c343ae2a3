package image

import (
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
	"time"

	"github.com/bangerhq/banger/internal/sandbox"
)

// DefaultMirror is the Debian mirror BuildDebian uses when none is given.
const DefaultMirror = "http://deb.debian.org/debian"

// BasePackages are always installed into a Debian image; the customize script
// relies on them (sshd, systemd as init, ip, udev to load modules).
var BasePackages = []string{"openssh-server", "systemd-sysv", "iproute2", "udev", "kmod", "dbus"}

// DebianReleases are the Debian releases BuildDebian builds, by codename
// (and version), oldest first: the ones the end-to-end tests boot, cold
// and cloned.
var DebianReleases = []struct{ Codename, Version string }{
	{"bookworm", "12"},
	{"trixie", "13"},
}

// CheckDebianRelease says whether BuildDebian builds release, and if not,
// which releases it builds and what to do instead.
func CheckDebianRelease(release string) error {
	var names []string
	for _, r := range DebianReleases {
		if release == r.Codename {
			return nil
		}
		names = append(names, fmt.Sprintf("%s (%s)", r.Codename, r.Version))
	}
	what := fmt.Sprintf("debian release %q: banger builds and tests %s, by codename", release, strings.Join(names, " and "))
	for _, r := range DebianReleases {
		if release == r.Version {
			return fmt.Errorf("%s: Debian %s is debian:%s", what, r.Version, r.Codename)
		}
	}
	return fmt.Errorf("%s; for another release, build from its OCI image (--from oci:docker.io/library/debian:%s), which banger adapts but does not test", what, release)
}

// debianPackageName is Debian policy's package name syntax (no version or
// architecture suffixes: they would be passed to mmdebstrap's --include).
var debianPackageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// DebianOptions describes a Debian image build.
type DebianOptions struct {
	// Release is the codename of one of DebianReleases, such as
	// "bookworm". Required.
	Release string
	// Mirror is the Debian mirror URL; DefaultMirror when empty.
	Mirror string
	// Packages are installed in addition to BasePackages.
	Packages []string
	// RootfsOptions are the build's, as for BuildRootfs; Tar is
	// BuildDebian's own (mmdebstrap's stream), Phase is also told of
	// "bootstrap", and TempDir also holds mmdebstrap's temporary root
	// (several hundred MB).
	RootfsOptions
}

// CheckDebianTools reports, in one error wrapping ErrMissingTool, every host
// tool that BuildDebian needs and cannot find, with the Debian package that
// provides it. It returns nil when all are present.
func CheckDebianTools() error {
	_, err := lookTools(toolMmdebstrap)
	return errors.Join(err, CheckRootfsTools())
}

// BuildDebian builds a bootable ext4 image of Debian opts.Release at
// opts.Output: mmdebstrap --mode=unshare --variant=minbase writes the root
// file system as a tar stream (no hook runs in it), which goes through
// BuildRootfs like any other image: extracted, customized and made into an
// ext4 image in the build sandbox. mmdebstrap runs in a process tree that
// dies with this process (sandbox.Guard).
//
// It fails early, with an error wrapping ErrMissingTool, when a needed host
// tool is missing. Everything temporary is removed whether the build
// succeeds, fails or ctx is cancelled.
func BuildDebian(ctx context.Context, opts DebianOptions) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("build debian %s image: %w", opts.Release, err)
		}
	}()
	if err := opts.fill(); err != nil {
		return err
	}
	if err := CheckDebianTools(); err != nil {
		return err
	}
	mmdebstrap, err := lookTool(toolMmdebstrap)
	if err != nil {
		return err
	}
	slog.Debug("building debian image", "component", "image", "release", opts.Release, "output", opts.Output)
	work, err := os.MkdirTemp(opts.TempDir, "banger-debian-*")
	if err != nil {
		return err
	}
	// mmdebstrap's unshared root works in here as a subordinate uid, which
	// must be able to enter the folder.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	defer func() {
		if rmErr := sandbox.RemoveAll(context.WithoutCancel(ctx), opts.IDs, work); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove temporary files: %w", rmErr))
		}
	}()
	if opts.Phase != nil {
		opts.Phase("bootstrap", "mmdebstrap "+opts.Release)
	}
	fmt.Fprintf(opts.Log, "image: mmdebstrap %s from %s (packages: %s)\n", opts.Release, opts.Mirror, strings.Join(opts.packages(), ","))
	ro := opts.RootfsOptions
	ro.Tar = func(ctx context.Context, w io.Writer) error { return opts.mmdebstrap(ctx, mmdebstrap, work, w) }
	ro.TempDir = work
	return BuildRootfs(ctx, ro)
}

// fill validates opts and sets defaults.
func (o *DebianOptions) fill() error {
	if o.Release == "" {
		return errors.New("no release given (for example bookworm)")
	}
	if err := CheckDebianRelease(o.Release); err != nil {
		return err
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
	if o.Scripts == "" {
		return errors.New("no scripts folder given (scripts.WriteTo)")
	}
	if _, err := os.Stat(filepath.Join(o.Scripts, "customize.sh")); err != nil {
		return fmt.Errorf("customize script: %w", err)
	}
	if o.ModulesDir != "" {
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

// mmdebstrap runs mmdebstrap, writing its root file system tar to w and its
// messages to o.Log. It runs under sandbox.Guard: cancelling ctx, or this
// process dying, ends its whole process tree.
func (o *DebianOptions) mmdebstrap(ctx context.Context, bin, work string, w io.Writer) error {
	start := time.Now()
	args := []string{
		"--mode=unshare",
		"--variant=minbase",
		"--include=" + strings.Join(o.packages(), ","),
		o.Release, "-", o.Mirror,
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = work
	// Its temporary root lands in work, which is removed in any case.
	cmd.Env = append(os.Environ(), "TMPDIR="+work)
	cmd.Stdout = w
	pr, pw := io.Pipe()
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
	err := sandbox.Guard(ctx, cmd)
	pw.Close()
	wg.Wait()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("mmdebstrap: %w", ctxErr)
		}
		return fmt.Errorf("mmdebstrap: %w: %s", err, tail.String())
	}
	fmt.Fprintf(o.Log, "image: mmdebstrap done in %s\n", since(start))
	return nil
}
