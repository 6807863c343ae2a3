package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/units"
)

// Default build limits (config keys [image] max_size, max_files) and the
// free space a build leaves on its folder's file system.
const (
	DefaultMaxSize  = 32 << 30
	DefaultMaxFiles = 2_000_000
	DefaultMinFree  = 1 << 30
)

// RootfsOptions describes a build from a root file system given as one tar
// stream: a flattened OCI image, an imported rootfs tarball, or Debian from
// mmdebstrap (BuildDebian).
type RootfsOptions struct {
	// Tar writes the root file system to w as one uncompressed tar stream
	// (entries relative to /). It is called once; its error fails the build.
	Tar func(ctx context.Context, w io.Writer) error
	// Output is the ext4 image to create; its folder must exist. It appears
	// only when the build succeeds.
	Output string
	// Scripts is the folder holding customize.sh and its guest/ files
	// (scripts.WriteTo); others must be able to read it (the sandbox's ids
	// are not the daemon's).
	Scripts string
	// ModulesDir is the runtime's kernel/modules folder (holding
	// lib/modules/<release>): the image gets those modules. Optional.
	ModulesDir string
	// SSHPubKey is one public key line for root's authorized_keys. Optional.
	SSHPubKey string
	// AgentBinary is the guest agent (banger-vsock-pingd); customize.sh
	// installs it with its service. Optional.
	AgentBinary string
	// IDs are the daemon user's subordinate ids (subid.Lookup): the build
	// sandbox's ids. Required.
	IDs subid.IDs
	// Limits cap the build (zero fields: DefaultMaxSize, DefaultMaxFiles);
	// MaxBytes is lowered further to what the free space of TempDir holds.
	Limits tarlimit.Limits
	// MinFree is the free space the build leaves on TempDir's file system
	// (DefaultMinFree when 0).
	MinFree int64
	// Net is the sandbox's network, for customize.sh's package installs;
	// nil: none (an image missing packages then fails to install them).
	Net *sandbox.Net
	// DNS is the name server the image's package manager is given.
	DNS string
	// Log receives progress lines (the customize script's output among
	// them, control characters escaped). Nil discards them.
	Log io.Writer
	// Phase, when set, is told when a phase starts: "extract", "customize",
	// "mkfs", "finish".
	Phase func(phase, message string)
	// TempDir holds the build folder (the tree, removed at the end);
	// os.TempDir() when empty.
	TempDir string
}

// CheckRootfsTools reports, in one error wrapping ErrMissingTool, every host
// tool that BuildRootfs needs and cannot find.
func CheckRootfsTools() error {
	ts := []tool{toolMkfs, toolDebugfs, toolE2fsck}
	if os.Geteuid() != 0 {
		// The sandbox's ids are mapped with them.
		ts = append(ts, toolNewuidmap, toolNewgidmap)
	}
	_, err := lookTools(ts...)
	return err
}

// BuildRootfs builds a bootable ext4 image at opts.Output from the root file
// system that opts.Tar writes. Everything that touches the image's content
// runs in a build sandbox (package sandbox: user namespace of subordinate
// ids, no host privilege, its own network):
//
//  1. extract: the stream is untarred inside the tree (pivot_root: every
//     path resolves inside it) with owners, modes, times, hard links and
//     the extended attributes a user namespace may set; device nodes are
//     held back. The limits are enforced while streaming. The tree must
//     have /etc and a /bin/sh for this machine.
//  2. customize: customize.sh runs with the image's own /bin/sh, / being
//     the tree, with a /dev and /proc of its own.
//  3. mkfs: mkfs.ext4 -d copies the tree into a sparse image sized to the
//     content plus headroom; the tree is removed.
//  4. finish: debugfs adds the device nodes (each read back), e2fsck
//     checks the image; the file is renamed to Output.
//
// A failure or a cancelled ctx leaves no file and no process behind.
func BuildRootfs(ctx context.Context, opts RootfsOptions) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			err = fmt.Errorf("build image from root file system: %w", err)
		}
	}()
	if opts.Tar == nil || opts.Output == "" || opts.Scripts == "" {
		return errors.New("Tar, Output and Scripts are required")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.MinFree == 0 {
		opts.MinFree = DefaultMinFree
	}
	for _, p := range []*string{&opts.Output, &opts.Scripts, &opts.TempDir, &opts.ModulesDir, &opts.AgentBinary} {
		if *p == "" {
			continue
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if strings.ContainsAny(opts.SSHPubKey, "\n\r") {
		return errors.New("SSH public key must be a single line")
	}
	if err := CheckRootfsTools(); err != nil {
		return err
	}
	limits, err := buildLimits(opts.Limits, opts.TempDir, opts.MinFree)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(opts.TempDir, "banger-rootfs-*")
	if err != nil {
		return err
	}
	defer func() {
		// What the sandbox left belongs to its ids.
		if rmErr := sandbox.RemoveAll(context.WithoutCancel(ctx), opts.IDs, work); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove the build folder: %w", rmErr))
		}
	}()
	imgPath, err := tempImage(opts.Output)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(imgPath)
		}
	}()

	inputs, env := customizeInputs(opts.Scripts, opts.ModulesDir, opts.AgentBinary, opts.SSHPubKey, opts.DNS)
	binds := append([]sandbox.Bind{
		{Source: work, At: sbWork, Writable: true, Give: true},
		{Source: imgPath, At: sbOut, Writable: true, Give: true},
	}, inputs...)

	// The stream goes to the sandbox through a pipe of its own.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	produced := make(chan error, 1)
	go func() {
		err := opts.Tar(ctx, pw)
		pw.Close()
		produced <- err
	}()
	log := &lineLog{w: opts.Log}
	raw, err := sandbox.Run(ctx, sandbox.Spec{
		IDs: opts.IDs, Binds: binds, Job: "image.build", Net: opts.Net, Stdin: pr, Log: log,
		Arg: buildArg{Limits: limits, MinFree: opts.MinFree, Env: env},
		OnEvent: func(e json.RawMessage) {
			var pe phaseEvent
			if json.Unmarshal(e, &pe) == nil && opts.Phase != nil {
				opts.Phase(pe.Phase, pe.Message)
			}
		},
	})
	// The sandbox is gone: a producer still writing gets EPIPE now.
	pr.Close()
	perr := <-produced
	log.flush()
	if perr != nil && !brokenPipe(perr) {
		// The stream's own failure (a registry gone, a corrupt layer) is
		// the cause of the sandbox's.
		return fmt.Errorf("read the root file system: %w", perr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	var res buildResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("build result: %w", err)
	}
	if err := publish(imgPath, opts.Output); err != nil {
		return err
	}
	_, alloc, _ := Size(opts.Output)
	fmt.Fprintf(opts.Log, "image: built %s: %s, %s allocated, in %s\n", opts.Output, units.IEC(res.Size), units.IEC(alloc), since(start))
	return nil
}

// buildLimits fills in the defaults of l and lowers MaxBytes to what the
// free space of dir holds: the tree and the image each take about the
// content's size, and minFree stays free.
func buildLimits(l tarlimit.Limits, dir string, minFree int64) (tarlimit.Limits, error) {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.Why == "" {
		l.Why = "[image] max_size"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return l, fmt.Errorf("free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	room := (free - minFree) / 2
	if room < 64<<20 {
		return l, fmt.Errorf("%w: %s has %s free; a build keeps %s free and needs room for the tree and the image: free some space",
			tarlimit.ErrTooLarge, dir, units.IEC(free), units.IEC(minFree))
	}
	if room < l.MaxBytes {
		l.MaxBytes = room
		l.Why = fmt.Sprintf("half the free space of %s beyond the %s a build leaves free: the tree and the image each take that much", dir, units.IEC(minFree))
	}
	return l, nil
}

func brokenPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed)
}

// lineLog passes the sandbox's output on to w a line at a time, with
// control characters escaped (the lines carry what an image's programs
// print, which must not drive the user's terminal) and long lines cut.
type lineLog struct {
	mu   sync.Mutex
	w    io.Writer
	part []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := strings.IndexByte(string(l.part), '\n')
		if i < 0 {
			if len(l.part) > 64<<10 {
				l.line(l.part)
				l.part = nil
			}
			break
		}
		l.line(l.part[:i])
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *lineLog) line(b []byte) {
	if len(b) > 4096 {
		b = append(b[:4096:4096], "..."...)
	}
	fmt.Fprintln(l.w, SanitizeLine(string(b)))
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.line(l.part)
		l.part = nil
	}
}

// SanitizeLine escapes control characters (but tab) and invalid UTF-8 in s,
// so text an image chose can be printed to a terminal.
func SanitizeLine(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&sb, `\x%02x`, s[i])
		case r == '\t':
			sb.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteString(s[i : i+n])
		}
		i += n
	}
	return sb.String()
}

// CustomizeOptions describes a CustomizeTree run.
type CustomizeOptions struct {
	Scripts, ModulesDir, AgentBinary, SSHPubKey, DNS string
	IDs                                              subid.IDs
	Log                                              io.Writer
}

// CustomizeTree checks the root file system tree at dir and runs
// customize.sh on it in a build sandbox, as a build does after extracting.
// Its files must belong to the sandbox's ids (IDs.SandboxUID() and up). It
// exists for the tests of customize.sh.
func CustomizeTree(ctx context.Context, dir string, opts CustomizeOptions) error {
	inputs, env := customizeInputs(opts.Scripts, opts.ModulesDir, opts.AgentBinary, opts.SSHPubKey, opts.DNS)
	binds := append([]sandbox.Bind{{Source: dir, At: sbTree, Writable: true, Give: true}}, inputs...)
	log := &lineLog{w: opts.Log}
	if opts.Log == nil {
		log.w = io.Discard
	}
	_, err := sandbox.Run(ctx, sandbox.Spec{IDs: opts.IDs, Binds: binds, Job: "image.customize", Arg: env, Log: log})
	log.flush()
	return err
}

// customizeInputs are the read-only binds of customize.sh's inputs (the
// scripts folder; the modules folder and the agent when given) and the
// environment the job gives the script.
func customizeInputs(scripts, modules, agent, sshPubKey, dns string) ([]sandbox.Bind, customizeEnv) {
	binds := []sandbox.Bind{{Source: scripts, At: sbScripts}}
	env := customizeEnv{SSHPubKey: sshPubKey, DNS: dns}
	if modules != "" {
		binds = append(binds, sandbox.Bind{Source: modules, At: sbModules})
		env.Modules = true
	}
	if agent != "" {
		binds = append(binds, sandbox.Bind{Source: agent, At: sbAgent})
		env.Agent = true
	}
	return binds, env
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
