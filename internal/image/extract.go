package image

import (
	"archive/tar"
	"bufio"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/units"
)

// The tree functions run inside the build sandbox, pivot_root'ed into the
// image tree: every path they open resolves inside the image, symlinks
// included, and they hold no host privilege.
func init() {
	sandbox.RegisterTreeFunc("image.extract", extractTree)
	sandbox.RegisterTreeFunc("image.check", func(json.RawMessage, io.Reader, io.Writer) (any, error) {
		return checkTree()
	})
}

// extractArg is image.extract's argument.
type extractArg struct {
	Limits tarlimit.Limits
	// MinFree: the extraction stops when the file system holding the tree
	// has less free space than this.
	MinFree int64
}

// extractResult is what image.extract reports.
type extractResult struct {
	// Devices are the device nodes held back: a user namespace cannot
	// create them, the finish step adds them to the ext4 image.
	Devices []heldNode
	// Dropped lists the extended attributes not kept ("PATH: NAME").
	Dropped []string
	// Files and Bytes are the entries and content bytes extracted.
	Files, Bytes int64
	// Warning is said in the build log (an architecture not checked).
	Warning string
}

// heldNode is a device node of the image.
type heldNode struct {
	Path         string // absolute, clean
	Block        bool
	Major, Minor int64
	Mode         int64 // permission bits
	UID, GID     int
	MTime        int64
}

// maxID is the largest owner id an image may use: the sandbox maps 0..maxID.
const maxID = 65535

// Kernel limits on extended attributes (XATTR_NAME_MAX, XATTR_SIZE_MAX).
const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
)

// extractTree extracts the tar stream on stdin into / (the image tree),
// keeping owners, modes, times, hard links, FIFOs and the extended
// attributes a user namespace may set (user.*, security.capability, POSIX
// ACLs, which mkfs.ext4 -d then copies); device nodes are held back. Then it
// checks the tree (checkTree).
func extractTree(raw json.RawMessage, stdin io.Reader, log io.Writer) (any, error) {
	var a extractArg
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	x := &extractor{count: tarlimit.Counter{Limits: a.Limits}, minFree: a.MinFree, held: map[string]int{}, dirIdx: map[string]int{}}
	in := bufio.NewReaderSize(stdin, 1<<20)
	if err := x.extract(tar.NewReader(x.count.Reader(in, "the root file system stream"))); err != nil {
		return nil, err
	}
	// What follows the end-of-archive marker is padding; more than a
	// little of it is a stream that does not end.
	if n, _ := io.CopyN(io.Discard, in, 1<<20); n == 1<<20 {
		return nil, fmt.Errorf("%w: the stream goes on past the end of its archive", tarlimit.ErrTooLarge)
	}
	res := extractResult{Dropped: x.dropped, Files: x.count.Files(), Bytes: x.count.Bytes()}
	for _, i := range x.order {
		if i >= 0 {
			res.Devices = append(res.Devices, x.nodes[i])
		}
	}
	warn, err := checkTree()
	if err != nil {
		return nil, err
	}
	res.Warning, _ = warn.(string)
	return res, nil
}

type extractor struct {
	count   tarlimit.Counter
	minFree int64
	written int64 // content bytes since the last free-space check
	dirs    []dirMeta
	dirIdx  map[string]int
	nodes   []heldNode
	order   []int          // index into nodes, or -1 once replaced
	held    map[string]int // path -> index into order
	dropped []string
}

// dirMeta is applied to a folder once everything inside is written (a
// read-only folder would refuse its content).
type dirMeta struct {
	hdr  *tar.Header
	name string
	xs   []oci.Xattr
}

func (x *extractor) extract(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read the root file system stream: %w", err)
		}
		if err := x.count.Add(hdr); err != nil {
			return err
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Folders deepest first, so setting one's times is not undone by a
	// change inside it.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		// A later entry may have put something else there.
		if fi, err := os.Lstat(d.name); err != nil || !fi.IsDir() {
			continue
		}
		if err := x.meta(d.name, d.hdr, d.xs, -1); err != nil {
			return err
		}
	}
	return nil
}

// entry extracts one entry.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := path.Clean("/" + hdr.Name)
	what := tarlimit.Name(name)
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return fmt.Errorf("%s: owner %d:%d is outside the ids an image may use (0-%d)", what, hdr.Uid, hdr.Gid, maxID)
	}
	xs, err := oci.HeaderXattrs(hdr)
	if err != nil {
		return err
	}
	for _, xa := range xs {
		if len(xa.Name) > maxXattrName || len(xa.Value) > maxXattrValue {
			return fmt.Errorf("%s: extended attribute %s: a name of %d bytes and a value of %d bytes (the limits are %d and %d)",
				what, tarlimit.Name(xa.Name), len(xa.Name), len(xa.Value), maxXattrName, maxXattrValue)
		}
	}
	if name != "/" {
		if err := os.MkdirAll(path.Dir(name), 0o755); err != nil {
			return fmt.Errorf("%s: make its folder: %w", what, err)
		}
		if i, ok := x.held[name]; ok {
			x.order[i] = -1
			delete(x.held, name)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if name != "/" {
			if err := x.clear(name, true); err != nil {
				return err
			}
			if err := os.Mkdir(name, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		// A folder given again keeps its place, with the later metadata.
		if i, ok := x.dirIdx[name]; ok {
			x.dirs[i] = dirMeta{hdr: hdr, name: name, xs: xs}
			return nil
		}
		x.dirIdx[name] = len(x.dirs)
		x.dirs = append(x.dirs, dirMeta{hdr: hdr, name: name, xs: xs})
		return nil
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := x.clear(name, false); err != nil {
			return err
		}
		return x.file(name, hdr, xs, r)
	case tar.TypeSymlink:
		if err := x.clear(name, false); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return x.meta(name, hdr, xs, -1)
	case tar.TypeLink:
		target := path.Clean("/" + hdr.Linkname)
		if err := x.clear(name, false); err != nil {
			return err
		}
		if i, ok := x.held[target]; ok {
			if err := checkDebugfsPath(name); err != nil {
				return fmt.Errorf("device node %w", err)
			}
			n := x.nodes[x.order[i]]
			n.Path = name
			return x.hold(n)
		}
		if err := os.Link(target, name); err != nil {
			return fmt.Errorf("%s: hard link to %s: %w", what, tarlimit.Name(target), err)
		}
		return nil
	case tar.TypeFifo:
		if err := x.clear(name, false); err != nil {
			return err
		}
		if err := unix.Mkfifo(name, 0o600); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return x.meta(name, hdr, xs, -1)
	case tar.TypeChar, tar.TypeBlock:
		if err := checkDebugfsPath(name); err != nil {
			return fmt.Errorf("device node %w", err)
		}
		if err := x.clear(name, false); err != nil {
			return err
		}
		for _, xa := range xs {
			x.dropped = append(x.dropped, name+": "+xa.Name)
		}
		return x.hold(heldNode{Path: name, Block: hdr.Typeflag == tar.TypeBlock, Major: hdr.Devmajor, Minor: hdr.Devminor,
			Mode: hdr.Mode & 0o7777, UID: hdr.Uid, GID: hdr.Gid, MTime: hdr.ModTime.Unix()})
	case tar.TypeXGlobalHeader:
		return nil
	}
	return fmt.Errorf("%s: unsupported tar entry type %q", what, hdr.Typeflag)
}

func (x *extractor) hold(n heldNode) error {
	x.nodes = append(x.nodes, n)
	x.order = append(x.order, len(x.nodes)-1)
	x.held[n.Path] = len(x.order) - 1
	return nil
}

// clear removes what is at name unless it is a folder and dir is true (a
// folder entry over a folder keeps its content, as tar and overlayfs do).
func (x *extractor) clear(name string, dir bool) error {
	fi, err := os.Lstat(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", tarlimit.Name(name), err)
	}
	if fi.IsDir() {
		if dir {
			return nil
		}
		return os.RemoveAll(name)
	}
	return os.Remove(name)
}

// file writes a regular file's content, then its metadata.
func (x *extractor) file(name string, hdr *tar.Header, xs []oci.Xattr, r io.Reader) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", tarlimit.Name(name), err)
	}
	defer f.Close()
	n, err := io.Copy(f, r)
	if err != nil {
		return fmt.Errorf("%s: %w", tarlimit.Name(name), err)
	}
	if err := x.spend(n); err != nil {
		return err
	}
	if err := x.meta(name, hdr, xs, int(f.Fd())); err != nil {
		return err
	}
	return f.Close()
}

// spend accounts for n bytes written and checks, every 64 MiB, that the
// file system keeps its free-space margin.
func (x *extractor) spend(n int64) error {
	x.written += n
	if x.minFree <= 0 || x.written < 64<<20 {
		return nil
	}
	x.written = 0
	return checkFree("/", x.minFree)
}

// checkFree fails when the file system holding dir has less than minFree
// bytes free.
func checkFree(dir string, minFree int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * st.Bsize; free < minFree {
		return fmt.Errorf("%w: the build folder's file system has only %s free left (a build keeps %s free)",
			tarlimit.ErrTooLarge, units.IEC(free), units.IEC(minFree))
	}
	return nil
}

// meta sets owner, mode, extended attributes and times of name, through fd
// when it is not -1 (an open regular file), else without following a
// symlink at name. Owner comes first: chown clears setuid bits and file
// capabilities.
func (x *extractor) meta(name string, hdr *tar.Header, xs []oci.Xattr, fd int) error {
	what := tarlimit.Name(name)
	var err error
	if fd >= 0 {
		err = unix.Fchown(fd, hdr.Uid, hdr.Gid)
	} else {
		err = unix.Lchown(name, hdr.Uid, hdr.Gid)
	}
	if err != nil {
		return fmt.Errorf("%s: owner %d:%d: %w", what, hdr.Uid, hdr.Gid, err)
	}
	symlink := hdr.Typeflag == tar.TypeSymlink
	if !symlink {
		mode := uint32(hdr.Mode & 0o7777)
		if fd >= 0 {
			err = unix.Fchmod(fd, mode)
		} else {
			err = unix.Fchmodat(unix.AT_FDCWD, name, mode, 0)
		}
		if err != nil {
			return fmt.Errorf("%s: mode %o: %w", what, mode, err)
		}
	}
	for _, xa := range xs {
		if !keptXattr(xa.Name, hdr.Typeflag) {
			x.dropped = append(x.dropped, name+": "+xa.Name)
			continue
		}
		if fd >= 0 {
			err = unix.Fsetxattr(fd, xa.Name, xa.Value, 0)
		} else {
			err = unix.Lsetxattr(name, xa.Name, xa.Value, 0)
		}
		if err != nil {
			return fmt.Errorf("%s: extended attribute %s (%d bytes): %w", what, tarlimit.Name(xa.Name), len(xa.Value), err)
		}
	}
	mt := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	if hdr.ModTime.IsZero() {
		mt = unix.NsecToTimespec(time.Unix(0, 0).UnixNano())
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, name, []unix.Timespec{mt, mt}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: times: %w", what, err)
	}
	return nil
}

// keptXattr reports whether an extended attribute is kept: the ones the
// sandbox may set (mkfs.ext4 -d copies them into the image). Others
// (trusted.*, security.* but capabilities) need host privilege and mean
// nothing to a banger guest; they are dropped, and the build log says so.
func keptXattr(name string, typ byte) bool {
	switch {
	case strings.HasPrefix(name, "user."):
		return typ == tar.TypeReg || typ == tar.TypeDir
	case name == "security.capability":
		return typ == tar.TypeReg || typ == tar.TypeGNUSparse
	case name == "system.posix_acl_access":
		return typ != tar.TypeSymlink
	case name == "system.posix_acl_default":
		return typ == tar.TypeDir
	}
	return false
}

// errNoShell is the refusal for an image without a usable /bin/sh.
var errNoShell = errors.New("the image has no shell (/bin/sh) and cannot be customized: build from an image that has one (any Debian, Fedora or Alpine base image)")

// checkTree checks, inside the tree, that it is a root file system whose
// programs run on this host: /etc exists, and /bin/sh (its links followed
// inside the image) is an ELF program for this machine. It returns a
// warning (a string) when the architecture could not be checked.
func checkTree() (any, error) {
	if fi, err := os.Stat("/etc"); err != nil || !fi.IsDir() {
		return nil, errors.New("the image has no /etc: it is not a root file system")
	}
	fi, err := os.Stat("/bin/sh")
	if err != nil || !fi.Mode().IsRegular() {
		return nil, errNoShell
	}
	f, err := elf.Open("/bin/sh")
	if err != nil {
		target, _ := os.Readlink("/bin/sh")
		return fmt.Sprintf("the image's /bin/sh (%s) is not an ELF program: architecture not checked", target), nil
	}
	defer f.Close()
	host, ok := hostMachines[runtime.GOARCH]
	if !ok {
		return "host architecture " + runtime.GOARCH + " unknown: image architecture not checked", nil
	}
	if f.Machine != host.machine {
		return nil, fmt.Errorf("the image is built for %s but this host is %s: build from an image for linux/%s",
			machineName(f.Machine), host.name, runtime.GOARCH)
	}
	return nil, nil
}

// hostMachines maps GOARCH to the ELF machine and `uname -m` name of hosts
// banger runs on.
var hostMachines = map[string]struct {
	machine elf.Machine
	name    string
}{
	"amd64":   {elf.EM_X86_64, "x86_64"},
	"arm64":   {elf.EM_AARCH64, "aarch64"},
	"riscv64": {elf.EM_RISCV, "riscv64"},
	"s390x":   {elf.EM_S390, "s390x"},
	"ppc64le": {elf.EM_PPC64, "ppc64le"},
}

// machineName is the `uname -m` name of an ELF machine.
func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_386:
		return "i386"
	case elf.EM_MIPS:
		return "mips"
	case elf.EM_PPC64:
		return "ppc64"
	case elf.EM_S390:
		return "s390x"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_AARCH64:
		return "aarch64"
	case elf.EM_RISCV:
		return "riscv64"
	case elf.EM_LOONGARCH:
		return "loongarch64"
	}
	return fmt.Sprintf("an unknown architecture (ELF machine %d)", m)
}
