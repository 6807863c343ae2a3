package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/units"
)

// RootfsOptions describes a build from a root file system given as one tar
// stream: a flattened OCI image, or an imported rootfs tarball.
type RootfsOptions struct {
	// Tar writes the root file system to w as one uncompressed tar stream
	// (entries relative to /). It is called once; its error fails the build.
	Tar func(ctx context.Context, w io.Writer) error
	// Output is the ext4 image to create; its folder must exist. It appears
	// only when the build succeeds.
	Output string
	// CustomizeScript, ModulesDir, SSHPubKey and AgentBinary are as in
	// DebianOptions: the same script, with the same environment.
	CustomizeScript string
	ModulesDir      string
	SSHPubKey       string
	AgentBinary     string
	// Log receives progress lines (the customize script's output among
	// them). Nil discards them.
	Log io.Writer
	// Phase, when set, is told when a phase starts: "extract", "customize",
	// "mkfs", "finish".
	Phase func(phase, message string)
	// TempDir holds the extracted tree during the build; os.TempDir() when
	// empty. Rootless, it must be a folder the user's subordinate ids can
	// enter (the build makes its own 0755 folder inside).
	TempDir string
}

// CheckRootfsTools reports, in one error wrapping ErrMissingTool, every host
// tool that BuildRootfs needs and cannot find.
func CheckRootfsTools() error {
	_, err := rootfsTools()
	return err
}

var (
	toolUnshare = tool{"unshare", "util-linux"}
	toolDu      = tool{"du", "coreutils"}
)

func rootfsTools() (map[string]string, error) {
	ts := []tool{toolUnshare, toolTar, toolMkfs, toolDebugfs, toolE2fsck, toolDu}
	if os.Geteuid() != 0 {
		ts = append(ts, toolNewuidmap)
	}
	return lookTools(ts...)
}

// BuildRootfs builds a bootable ext4 image at opts.Output from the root file
// system that opts.Tar writes, running opts.CustomizeScript on it, as the
// Debian path does. Everything that needs root runs in namespaces made with
// unshare(1): as root a private mount and PID namespace; otherwise also a
// user namespace mapping the user's subordinate ids (/etc/subuid), so owners
// up to 65535 are kept without privileges.
//
//  1. extract: the stream is untarred in the namespace with owners and
//     modes kept. Device nodes (which a user namespace cannot create) and
//     extended attributes are held back and recorded.
//  2. customize: /proc and /dev are mounted in the tree and the script runs
//     with the tree as $1; the tree's size is measured.
//  3. mkfs: mkfs.ext4 -d copies the tree (as the namespace sees it, so with
//     the image's own owners) into a sparse image; the tree is removed.
//  4. finish: debugfs creates the held-back device nodes and sets the
//     extended attributes; e2fsck checks the result; the file is renamed to
//     Output.
//
// A failure or a cancelled ctx removes the tree and the partial image; the
// namespace's processes are killed with it.
func BuildRootfs(ctx context.Context, opts RootfsOptions) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			err = fmt.Errorf("build image from root file system: %w", err)
		}
	}()
	if opts.Tar == nil || opts.Output == "" || opts.CustomizeScript == "" {
		return errors.New("Tar, Output and CustomizeScript are required")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	phase := func(p, msg string) {
		fmt.Fprintf(opts.Log, "image: %s: %s\n", p, msg)
		if opts.Phase != nil {
			opts.Phase(p, msg)
		}
	}
	for _, p := range []*string{&opts.Output, &opts.CustomizeScript, &opts.TempDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if strings.ContainsAny(opts.SSHPubKey, "\n\r") {
		return errors.New("SSH public key must be a single line")
	}
	tools, err := rootfsTools()
	if err != nil {
		return err
	}
	ns := namespace{unshare: tools["unshare"], rootless: os.Geteuid() != 0}

	work, err := os.MkdirTemp(opts.TempDir, "banger-rootfs-*")
	if err != nil {
		return err
	}
	// Rootless, the namespace's root is the user's own uid, but the files it
	// extracts belong to subordinate ids: only the namespace can remove them.
	if err := os.Chmod(work, 0o755); err != nil {
		os.Remove(work)
		return err
	}
	tree := filepath.Join(work, "rootfs")
	defer func() {
		if rmErr := ns.removeAll(context.WithoutCancel(ctx), work); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove temporary tree: %w", rmErr))
		}
	}()

	// 1 + 2. Extract from stdin, customize, measure.
	phase("extract", "unpacking the root file system")
	held := &heldBack{}
	pr, pw := io.Pipe()
	filterErr := make(chan error, 1)
	go func() {
		err := filterTar(ctx, opts.Tar, pw, held)
		pw.CloseWithError(err)
		filterErr <- err
	}()
	env := []string{
		"BANGER_MODULES_DIR=" + opts.ModulesDir,
		"BANGER_SSH_PUBKEY=" + opts.SSHPubKey,
		"BANGER_AGENT_BIN=" + opts.AgentBinary,
		"TMPDIR=/tmp",
	}
	var stdout bytes.Buffer
	onLine := func(line string) {
		if line == "banger: extracted" {
			phase("customize", "running customize.sh")
			return
		}
		fmt.Fprintf(opts.Log, "customize: %s\n", strings.TrimPrefix(line, "customize: "))
	}
	err = ns.run(ctx, pr, &stdout, onLine, env, customizeInNamespace,
		tools["tar"], tree, opts.CustomizeScript, tools["du"])
	// tar may stop reading at the end-of-archive marker: unblock the filter,
	// and wait for it so held is complete and nothing is left running.
	pr.Close()
	if ferr := <-filterErr; ferr != nil && !errors.Is(ferr, io.ErrClosedPipe) {
		// The stream's own failure (a registry gone, a corrupt layer) is
		// the cause of tar's.
		return fmt.Errorf("read the root file system: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("extract and customize: %w", err)
	}
	used, inodes, err := parseUsage(stdout.String())
	if err != nil {
		return err
	}
	size := imageSize(used)
	logf := func(format string, args ...any) { fmt.Fprintf(opts.Log, "image: "+format+"\n", args...) }
	logf("content %s in %d inodes: image size %s", units.IEC(used), inodes, units.IEC(size))

	// 3. mkfs.ext4 -d inside the namespace, where owners read as the image's.
	phase("mkfs", "making the ext4 file system ("+units.IEC(size)+")")
	imgPath, err := tempImage(opts.Output)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(imgPath)
		}
	}()
	if err := ns.run(ctx, nil, io.Discard, func(l string) { logf("mkfs: %s", l) }, nil, mkfsInNamespace,
		tools["mkfs.ext4"], tree, imgPath, fmt.Sprint(size), fmt.Sprint(inodeCount(size, inodes))); err != nil {
		return fmt.Errorf("mkfs.ext4: %w", err)
	}

	// 4. What the namespace could not create, then a check.
	phase("finish", fmt.Sprintf("%d device nodes, %d extended attributes", len(held.devices), len(held.xattrs)))
	if err := applyHeldBack(ctx, tools, work, imgPath, held); err != nil {
		return err
	}
	if err := publish(imgPath, opts.Output); err != nil {
		return err
	}
	_, alloc, _ := Size(opts.Output)
	logf("built %s: %s, %s allocated, in %s", opts.Output, units.IEC(size), units.IEC(alloc), since(start))
	return nil
}

// customizeInNamespace runs as root in the build's namespaces:
// $1 tar, $2 tree, $3 customize.sh, $4 du. It extracts stdin into the tree,
// mounts /proc and /dev there for the script (and the package manager it
// may run), lends it the host's resolv.conf, runs the script, undoes the
// mounts, and prints "USAGE <bytes> <inodes>" on its last line.
const customizeInNamespace = `set -eu
tar=$1 root=$2 script=$3 du=$4
mkdir "$root"
"$tar" -xpf - -C "$root" --numeric-owner --same-owner
echo "banger: extracted" >&2
[ -d "$root/etc" ] || { echo "customize: error: the image has no /etc: it is not a root file system" >&2; exit 1; }
for d in proc dev tmp; do
	if [ -L "$root/$d" ]; then rm -f "$root/$d"; fi
	mkdir -p "$root/$d"
done
chmod 1777 "$root/tmp"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
if [ -e /etc/resolv.conf ]; then
	rm -f "$root/etc/resolv.conf"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
fi
status=0
sh "$script" "$root" >&2 || status=$?
umount -R "$root/dev" || umount -l "$root/dev"
umount "$root/proc" || umount -l "$root/proc"
[ "$status" -eq 0 ] || exit "$status"
echo "USAGE $("$du" -sx -B1 "$root" | cut -f1) $(find "$root" -xdev | wc -l)"
`

// mkfsInNamespace: $1 mkfs.ext4, $2 tree, $3 image, $4 size, $5 inodes (0:
// mkfs's default). The tree is removed once copied.
const mkfsInNamespace = `set -eu
mkfs=$1 root=$2 img=$3 size=$4 inodes=$5
truncate -s "$size" "$img"
if [ "$inodes" = 0 ]; then
	"$mkfs" -q -F -L banger-root -d "$root" "$img"
else
	"$mkfs" -q -F -L banger-root -N "$inodes" -d "$root" "$img"
fi
rm -rf "$root"
`

func parseUsage(out string) (used, inodes int64, err error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) == 3 && f[0] == "USAGE" {
		used, err1 := strconv.ParseInt(f[1], 10, 64)
		inodes, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil {
			return used, inodes, nil
		}
	}
	return 0, 0, fmt.Errorf("could not measure the customized tree (got %q)", out)
}

// namespace runs shell scripts as root in fresh mount and PID namespaces
// (plus a user namespace when not root).
type namespace struct {
	unshare  string
	rootless bool
}

func (n namespace) args(script string, args ...string) []string {
	a := []string{"--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"}
	if n.rootless {
		// util-linux >= 2.38: map root to the user and the rest of the
		// container's ids to the user's /etc/subuid and /etc/subgid ranges.
		a = append([]string{"--user", "--map-root-user", "--map-auto"}, a...)
	}
	return append(append(a, "sh", "-c", script, "banger-ns"), args...)
}

// run runs script with args in the namespaces. stdin may be nil. Each line
// the script writes to stderr goes to onLine; a failure carries the last
// lines. Cancelling ctx kills the namespace's processes (unshare
// --kill-child, and the PID namespace dies with its first process).
func (n namespace) run(ctx context.Context, stdin io.Reader, stdout io.Writer, onLine func(string),
	env []string, script string, args ...string) error {
	cmd := exec.CommandContext(ctx, n.unshare, n.args(script, args...)...)
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	tail := &tailBuffer{max: 15}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			tail.add(sc.Text())
			onLine(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if n.rootless && strings.Contains(tail.String(), "subuid") {
			return fmt.Errorf("%w: %s (the user needs subordinate ids: add a range for it to /etc/subuid and /etc/subgid, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`)", err, tail.String())
		}
		return fmt.Errorf("%w: %s", err, tail.String())
	}
	return nil
}

// removeAll removes dir, from inside the namespace when files there belong to
// ids the user cannot remove.
func (n namespace) removeAll(ctx context.Context, dir string) error {
	if err := os.RemoveAll(dir); err == nil || !n.rootless {
		return err
	}
	if err := n.run(ctx, nil, io.Discard, func(string) {}, nil, `rm -rf "$1"`, dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// heldBack is what the extraction leaves to debugfs.
type heldBack struct {
	devices []*tar.Header
	xattrs  []oci.Xattr
}

// filterTar runs produce into a pipe and copies its tar stream to w, minus
// device nodes and FIFOs (recorded in held) and with extended attributes
// stripped (recorded too). A hard link to a held-back node is held back as
// another node with the same numbers.
func filterTar(ctx context.Context, produce func(context.Context, io.Writer) error, w io.Writer, held *heldBack) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(produce(ctx, pw)) }()
	defer pr.Close()
	tr := tar.NewReader(pr)
	tw := tar.NewWriter(w)
	special := map[string]*tar.Header{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read root file system stream: %w", err)
		}
		xs, err := oci.HeaderXattrs(hdr)
		if err != nil {
			return err
		}
		held.xattrs = append(held.xattrs, xs...)
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") || strings.HasPrefix(k, "LIBARCHIVE.xattr.") {
				delete(hdr.PAXRecords, k)
			}
		}
		hdr.Xattrs = nil //nolint:staticcheck // cleared so the writer does not re-add them
		name := cleanTarPath(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			h := *hdr
			h.Name = name
			special[name] = &h
			held.devices = append(held.devices, &h)
			continue
		case tar.TypeLink:
			if t, ok := special[cleanTarPath(hdr.Linkname)]; ok {
				h := *t
				h.Name = name
				held.devices = append(held.devices, &h)
				continue
			}
		}
		if len(hdr.PAXRecords) == 0 {
			hdr.PAXRecords = nil
		}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copy %s: %w", hdr.Name, err)
		}
	}
	// The end-of-archive marker may come before the producer is done: its
	// error (if any) is only seen by reading on.
	if _, err := io.Copy(io.Discard, pr); err != nil {
		return err
	}
	return tw.Close()
}

func cleanTarPath(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// applyHeldBack creates held's device nodes and sets its extended attributes
// in the image with one debugfs run, then checks the file system. Nothing is
// run when there is nothing held back.
func applyHeldBack(ctx context.Context, tools map[string]string, work, img string, held *heldBack) error {
	if len(held.devices) == 0 && len(held.xattrs) == 0 {
		return nil
	}
	var script bytes.Buffer
	for _, h := range held.devices {
		dir, base := path.Split("/" + h.Name)
		if strings.ContainsAny(h.Name, "\"\n\r\x00") {
			return fmt.Errorf("device node %q: its name cannot be written for debugfs", h.Name)
		}
		kind, nums := "p", ""
		switch h.Typeflag {
		case tar.TypeChar:
			kind, nums = "c", fmt.Sprintf(" %d %d", h.Devmajor, h.Devminor)
		case tar.TypeBlock:
			kind, nums = "b", fmt.Sprintf(" %d %d", h.Devmajor, h.Devminor)
		}
		typeBits := map[string]int64{"p": syscall.S_IFIFO, "c": syscall.S_IFCHR, "b": syscall.S_IFBLK}[kind]
		p := "/" + h.Name
		fmt.Fprintf(&script, "cd \"%s\"\nmknod \"%s\" %s%s\n", dir, base, kind, nums)
		fmt.Fprintf(&script, "sif \"%s\" mode 0%o\nsif \"%s\" uid %d\nsif \"%s\" gid %d\nsif \"%s\" mtime %d\ncd /\n",
			p, typeBits|(h.Mode&0o7777), p, h.Uid, p, h.Gid, p, h.ModTime.Unix())
	}
	valueDir := filepath.Join(work, "xattrs")
	if err := os.MkdirAll(valueDir, 0o700); err != nil {
		return err
	}
	if err := oci.WriteDebugfsScript(&script, held.xattrs, valueDir); err != nil {
		return err
	}
	cmdFile := filepath.Join(work, "debugfs.cmds")
	if err := os.WriteFile(cmdFile, script.Bytes(), 0o600); err != nil {
		return err
	}
	out, err := run(ctx, tools["debugfs"], "-w", "-f", cmdFile, img)
	if err != nil {
		return fmt.Errorf("debugfs: %w", err)
	}
	// debugfs reports a failed command on its output and still exits 0.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "not found by ext2_lookup") || strings.Contains(l, "Could not") || strings.HasPrefix(l, "mknod:") || strings.HasPrefix(l, "ea_set:") {
			return fmt.Errorf("debugfs: %s", strings.TrimSpace(l))
		}
	}
	if out, err := run(ctx, tools["e2fsck"], "-fn", img); err != nil {
		return fmt.Errorf("check after adding device nodes and xattrs: %w: %s", err, lastLines(out, 10))
	}
	return nil
}
