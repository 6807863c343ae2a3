package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/units"
)

// The build job runs as the init stage of the build sandbox: trusted Go code
// without host privilege, which runs the image's own programs only in tree
// runs (sandbox.Sandbox.InTree) and host tools (mkfs.ext4, debugfs, e2fsck)
// only when no image program runs any more.
func init() {
	sandbox.RegisterJob("image.build", buildJob)
	sandbox.RegisterJob("image.customize", customizeJob)
}

// Paths inside the build sandbox (sandbox.Bind.At).
const (
	sbWork    = "/work"        // the build folder, the sandbox's own
	sbTree    = "/work/rootfs" // the image tree, made by the job
	sbOut     = "/out"         // the ext4 image file, open for writing
	sbScripts = "/inputs/scripts"
	sbModules = "/inputs/modules"
	sbAgent   = "/inputs/agent"
)

// buildArg is the build job's argument.
type buildArg struct {
	Limits  tarlimit.Limits
	MinFree int64
	Env     customizeEnv
}

// customizeEnv is what customize.sh is given.
type customizeEnv struct {
	SSHPubKey string
	DNS       string
	Modules   bool // sbModules is bound
	Agent     bool // sbAgent is bound
}

// buildResult is what the build job reports.
type buildResult struct {
	Used, Inodes, Size int64
	Devices            int
	Dropped            []string
}

// phaseEvent is a build job's progress event.
type phaseEvent struct {
	Phase, Message string
}

func buildJob(sb *sandbox.Sandbox, raw json.RawMessage) (any, error) {
	var a buildArg
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	ctx := context.Background()
	phase := func(p, msg string) {
		fmt.Fprintf(os.Stderr, "image: %s: %s\n", p, msg)
		sb.Event(phaseEvent{Phase: p, Message: msg})
	}
	if err := os.Mkdir(sbTree, 0o755); err != nil {
		return nil, err
	}
	// The tree belongs to the sandbox's ids: it goes before the sandbox does.
	defer os.RemoveAll(sbTree)

	// 1. extract (and check the tree).
	phase("extract", "unpacking the root file system")
	raw, err := sb.InTree(ctx, sandbox.TreeSpec{Root: sbTree, Func: "image.extract",
		Arg: extractArg{Limits: a.Limits, MinFree: a.MinFree}, Stdin: os.Stdin, Stderr: os.Stderr})
	if err != nil {
		return nil, err
	}
	var ex extractResult
	if err := json.Unmarshal(raw, &ex); err != nil {
		return nil, err
	}
	logf("%d files and folders, %s of content", ex.Files, units.IEC(ex.Bytes))
	if ex.Warning != "" {
		logf("%s", ex.Warning)
	}
	for _, d := range ex.Dropped {
		logf("extended attribute not kept (only user.*, security.capability and POSIX ACLs are): %s", d)
	}

	// 2. customize.
	phase("customize", "running customize.sh")
	if err := customize(ctx, sb, sbTree, a.Env, a.MinFree); err != nil {
		return nil, err
	}
	used, inodes, err := measure(sbTree)
	if err != nil {
		return nil, err
	}
	if a.Limits.MaxBytes > 0 && used > a.Limits.MaxBytes {
		return nil, fmt.Errorf("%w: customized, it takes %s (over %s: %s)", tarlimit.ErrTooLarge,
			units.IEC(used), units.IEC(a.Limits.MaxBytes), a.Limits.Why)
	}
	size := imageSize(used)
	logf("content %s in %d inodes: image size %s", units.IEC(used), inodes, units.IEC(size))

	// 3. mkfs: no image program runs any more.
	phase("mkfs", "making the ext4 file system ("+units.IEC(size)+")")
	if err := os.Truncate(sbOut, size); err != nil {
		return nil, err
	}
	args := []string{"-q", "-F", "-L", "banger-root", "-d", sbTree}
	if n := inodeCount(size, inodes); n > 0 {
		args = append(args, "-N", strconv.FormatInt(n, 10))
	}
	if out, err := exec.Command("mkfs.ext4", append(args, sbOut)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4: %v: %s", err, lastLines(out, 10))
	}
	if err := os.RemoveAll(sbTree); err != nil {
		return nil, fmt.Errorf("remove the tree: %w", err)
	}

	// 4. finish: the device nodes, then a check.
	phase("finish", fmt.Sprintf("%d device nodes", len(ex.Devices)))
	if err := addDevices(ctx, sbOut, ex.Devices); err != nil {
		return nil, err
	}
	if out, err := exec.Command("e2fsck", "-fn", sbOut).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("check the image (e2fsck -fn): %v: %s", err, lastLines(out, 10))
	}
	return buildResult{Used: used, Inodes: inodes, Size: size, Devices: len(ex.Devices), Dropped: ex.Dropped}, nil
}

// customizeJob runs customize.sh on a tree given whole (CustomizeTree).
func customizeJob(sb *sandbox.Sandbox, raw json.RawMessage) (any, error) {
	var env customizeEnv
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, err
	}
	ctx := context.Background()
	res, err := sb.InTree(ctx, sandbox.TreeSpec{Root: sbTree, Func: "image.check", Stderr: os.Stderr})
	if err != nil {
		return nil, err
	}
	if w := strings.Trim(string(res), `"`); w != "" && w != "null" {
		logf("%s", w)
	}
	return nil, customize(ctx, sb, sbTree, env, 0)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "image: "+format+"\n", args...)
}

// customize runs customize.sh with the image's own shell, in a tree run
// with /dev, /proc and the inputs. When minFree is set, the run is stopped
// if the build folder's free space drops below it.
func customize(ctx context.Context, sb *sandbox.Sandbox, tree string, env customizeEnv, minFree int64) error {
	inputs := []sandbox.Input{{Name: "scripts", Source: sbScripts}}
	vars := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LC_ALL=C", "TERM=dumb",
		"BANGER_IN_SANDBOX=1",
		// apt and debconf never ask; systemctl edits files, with no
		// systemd to talk to.
		"DEBIAN_FRONTEND=noninteractive", "SYSTEMD_OFFLINE=1",
		"BANGER_SSH_PUBKEY=" + env.SSHPubKey,
		"BANGER_DNS=" + env.DNS,
	}
	if env.Modules {
		inputs = append(inputs, sandbox.Input{Name: "modules", Source: sbModules})
		vars = append(vars, "BANGER_MODULES_DIR=/run/banger/modules")
	}
	if env.Agent {
		inputs = append(inputs, sandbox.Input{Name: "agent", Source: sbAgent})
		vars = append(vars, "BANGER_AGENT_BIN=/run/banger/agent")
	}
	out := &prefixWriter{w: os.Stderr, prefix: "customize: ", tail: &tailBuffer{max: 15}}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if minFree > 0 {
		go watchFree(runCtx, cancel, tree, minFree)
	}
	_, err := sb.InTree(runCtx, sandbox.TreeSpec{Root: tree, System: true, Inputs: inputs,
		Argv: []string{"/bin/sh", "/run/banger/scripts/customize.sh"}, Env: vars, Stdout: out, Stderr: out})
	out.flush()
	if err != nil {
		if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		if msg := out.lastError(); msg != "" {
			return fmt.Errorf("customize.sh: %s", msg)
		}
		return fmt.Errorf("customize.sh: %w: %s", err, out.tail.String())
	}
	return nil
}

// watchFree cancels the run (with the reason) when dir's file system has
// less than minFree bytes free: an image's program that writes without end
// fills no disk.
func watchFree(ctx context.Context, cancel context.CancelCauseFunc, dir string, minFree int64) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := checkFree(dir, minFree); err != nil {
				cancel(fmt.Errorf("customize.sh stopped: %w", err))
				return
			}
		}
	}
}

// prefixWriter writes each line given to it to w with prefix (once: a
// line that has it already keeps it), and keeps the last lines.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	part   []byte
	tail   *tailBuffer
	errMsg string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.part = append(p.part, b...)
	for {
		i := bytes.IndexByte(p.part, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.part[:i]))
		p.part = p.part[i+1:]
	}
	return len(b), nil
}

func (p *prefixWriter) line(l string) {
	l = strings.TrimPrefix(l, p.prefix)
	if m, ok := strings.CutPrefix(l, "error: "); ok {
		p.errMsg = m
	}
	p.tail.add(l)
	fmt.Fprintf(p.w, "%s%s\n", p.prefix, l)
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.part) > 0 {
		p.line(string(p.part))
		p.part = nil
	}
}

// lastError is the text of the last "customize: error: " line.
func (p *prefixWriter) lastError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errMsg
}

// measure returns the space (allocated blocks, each inode once) and the
// inodes of the tree at root, like `du -sx` and `find | wc -l`. It follows
// no symlink.
func measure(root string) (used, inodes int64, err error) {
	seen := map[[2]uint64]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", p)
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := [2]uint64{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		used += st.Blocks * 512
		inodes++
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measure the tree: %w", err)
	}
	return used, inodes, nil
}

// addDevices creates the held-back device nodes in the ext4 image img with
// one debugfs run, then reads every one back: debugfs reports a failed
// command only in its output, so success is judged by what the image holds.
func addDevices(ctx context.Context, img string, nodes []heldNode) error {
	if len(nodes) == 0 {
		return nil
	}
	var script strings.Builder
	var paths []string
	for _, n := range nodes {
		// Checked at extraction; again here, where the command file is
		// written: no name may carry a second command.
		if err := checkDebugfsPath(n.Path); err != nil {
			return fmt.Errorf("device node %w", err)
		}
		kind := "c"
		if n.Block {
			kind = "b"
		}
		dir, base := filepath.Split(n.Path)
		fmt.Fprintf(&script, "cd %s\nmknod %s %s %d %d\ncd /\n", filepath.Clean(dir), base, kind, n.Major, n.Minor)
		fmt.Fprintf(&script, "sif %s mode 0%o\nsif %s uid %d\nsif %s gid %d\nsif %s mtime %d\n",
			n.Path, nodeMode(n), n.Path, n.UID, n.Path, n.GID, n.Path, n.MTime)
		paths = append(paths, n.Path)
	}
	tmp, err := os.MkdirTemp("", "debugfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmds := filepath.Join(tmp, "commands")
	if err := os.WriteFile(cmds, []byte(script.String()), 0o600); err != nil {
		return err
	}
	out, err := run(ctx, "debugfs", "-w", "-f", cmds, img)
	if err != nil {
		return fmt.Errorf("add device nodes: %w", err)
	}
	got, _, err := debugfsStats(ctx, "debugfs", tmp, img, paths)
	if err != nil {
		return fmt.Errorf("read the device nodes back: %w", err)
	}
	for _, n := range nodes {
		st, ok := got[n.Path]
		want := "character special"
		if n.Block {
			want = "block special"
		}
		switch {
		case !ok:
			return fmt.Errorf("device node %s was not created (debugfs: %s)", n.Path, lastLines(out, 5))
		case st.typ != want || st.mode != uint32(n.Mode) || st.uid != n.UID || st.gid != n.GID ||
			st.major != n.Major || st.minor != n.Minor:
			return fmt.Errorf("device node %s reads back as %s %d:%d mode %04o owner %d:%d, want %s %d:%d mode %04o owner %d:%d",
				n.Path, st.typ, st.major, st.minor, st.mode, st.uid, st.gid, want, n.Major, n.Minor, n.Mode, n.UID, n.GID)
		}
	}
	return nil
}

// nodeMode is the ext4 i_mode of a device node.
func nodeMode(n heldNode) int64 {
	if n.Block {
		return syscall.S_IFBLK | n.Mode
	}
	return syscall.S_IFCHR | n.Mode
}
