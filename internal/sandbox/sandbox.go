// Package sandbox runs banger's code for untrusted image trees, and the
// image's own programs, where they have no host privilege, whoever runs
// bangerd. It is the only place an image tree is touched.
//
// A sandbox is this same binary run again through /proc/self/exe with a
// hidden entry point (Main, called first thing in main and in TestMain), in
// three stages:
//
//   - setup: the daemon's own identity in a private mount namespace (as an
//     ordinary user: a user namespace mapping the user's uid and subordinate
//     ids, written with newuidmap). It builds the sandbox's root, a tmpfs
//     holding read-only binds of the host's /usr, /bin, /sbin and /lib
//     folders (the tools the job runs, such as mkfs.ext4), a /dev of six
//     nodes, and the folders and files the caller binds (Spec.Binds). Then
//     it starts:
//   - init: PID 1 of new user, mount, PID, IPC, UTS and network namespaces.
//     The user namespace maps ids 0..65535 to the daemon user's subordinate
//     range (subid.IDs), never to the daemon's own ids, also when bangerd is
//     root. It pivot_roots into the root the setup stage built, mounts its
//     own /proc, sets no_new_privs, brings up its network (Spec.Net, or
//     loopback alone) and runs the Job. The job is trusted Go code; it may
//     run host tools from the mirrored /usr on the tree, and:
//   - tree (Sandbox.InTree): new mount and PID namespaces inside the
//     sandbox, pivot_root into a folder of it (the image tree); with System,
//     a /dev made for it (null, zero, full, random, urandom, tty, its own
//     devpts and ptmx, shm), its own /proc, a tmpfs /run with read-only
//     inputs at /run/banger. There it runs a registered Go function or one
//     of the image's programs, with a reduced capability bounding set. When
//     the run ends its PID namespace ends, and every process it left with it.
//
// Every stage has a parent-death signal (SIGKILL) and the init stage is PID 1
// of its namespace: when bangerd dies, even by SIGKILL, the whole sandbox
// dies with it. Cancelling Run's context does the same. Guard gives a
// trusted host tool (mmdebstrap) the same fate without the namespaces, and
// every stage carries the daemon's owner token (SetOwner), so that the next
// daemon can make sure nothing of an earlier one's still runs (KillOwned).
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/subid"
)

// Spec describes one sandbox run.
type Spec struct {
	// IDs are the daemon user's subordinate ids (subid.Lookup): the
	// sandbox's ids 0..subid.SandboxSize-1 are IDs.UIDs.Start.. and
	// IDs.GIDs.Start.. on the host.
	IDs subid.IDs
	// Binds are the host files and folders the sandbox sees.
	Binds []Bind
	// Job names the code to run (RegisterJob); Arg is passed to it as JSON.
	Job string
	Arg any
	// Net, when set, is the sandbox's network; without it the sandbox has
	// a loopback interface and nothing else.
	Net *Net
	// Stdin is the job's stdin (nil: empty).
	Stdin io.Reader
	// Log receives what the stages write on stderr (nil: discarded).
	Log io.Writer
	// OnEvent, when set, gets every Sandbox.Event of the job, in order.
	OnEvent func(json.RawMessage)
	// Started, when set, is called with the host pid of the sandbox's
	// init before the job runs.
	Started func(pid int)
}

// Bind is a host file or folder seen inside the sandbox.
type Bind struct {
	// Source is the host path, absolute; it names something the daemon
	// chose, never a path inside an image.
	Source string
	// At is where the sandbox sees it: an absolute path outside the
	// folders the sandbox provides itself (see reservedTop).
	At string
	// Writable: the sandbox may write to it; else it is read-only.
	Writable bool
	// Give hands Source to the sandbox's root user for the run: it is
	// chowned to the sandbox's uid 0 before the job starts, and a regular
	// file is chowned back to the daemon's user afterwards. A folder given
	// stays the sandbox's: remove what the job left in it with RemoveAll.
	Give bool
}

// Net is a sandbox's network interface.
type Net struct {
	// Attach is called with the sandbox init's host pid once its network
	// namespace exists; it must put an interface named Iface into it (for
	// example one end of a veth pair, the other on a bridge).
	Attach func(pid int) error
	Iface  string
	// Addr and Gateway are set on Iface inside: the address with its
	// prefix, and the default route.
	Addr    netip.Prefix
	Gateway netip.Addr
}

// reservedTop are the folders of the sandbox's root that it fills itself.
var reservedTop = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp"}

// ErrSetup is wrapped by errors of the sandbox's set-up (namespaces, ids,
// mounts), as opposed to the job's own failures.
var ErrSetup = errors.New("sandbox set-up")

// Run runs spec's job in a new sandbox and returns its result, or the
// job's error. It returns when every process of the sandbox is gone.
func Run(ctx context.Context, spec Spec) (json.RawMessage, error) {
	if spec.Job == "" {
		return nil, errors.New("sandbox: no job")
	}
	for _, b := range spec.Binds {
		if err := checkBind(b); err != nil {
			return nil, err
		}
	}
	arg, err := json.Marshal(spec.Arg)
	if err != nil {
		return nil, fmt.Errorf("sandbox: encode argument: %w", err)
	}
	cfg := setupConfig{Op: opRun, Binds: spec.Binds, Init: initConfig{Job: spec.Job, Arg: arg}}
	if spec.Net != nil {
		if spec.Net.Attach == nil || spec.Net.Iface == "" || !spec.Net.Addr.IsValid() || !spec.Net.Gateway.IsValid() {
			return nil, errors.New("sandbox: Net needs Attach, Iface, Addr and Gateway")
		}
		cfg.Init.Net = &netConfig{Iface: spec.Net.Iface, Addr: spec.Net.Addr.String(), Gateway: spec.Net.Gateway.String()}
	}
	return runSetupStage(ctx, spec.IDs, cfg, spec)
}

// RemoveAll removes path and everything under it. Files a sandbox made
// belong to subordinate ids, which an ordinary user cannot remove: then
// the removal runs in a setup stage, where those ids are mapped. As root it
// is os.RemoveAll.
func RemoveAll(ctx context.Context, ids subid.IDs, path string) error {
	if os.Geteuid() == 0 {
		return os.RemoveAll(path)
	}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := runSetupStage(ctx, ids, setupConfig{Op: opRemove, Remove: path}, Spec{})
	return err
}

func checkBind(b Bind) error {
	if !path.IsAbs(b.Source) || !path.IsAbs(b.At) || path.Clean(b.At) != b.At || b.At == "/" {
		return fmt.Errorf("sandbox: bind %q at %q: both must be absolute and clean", b.Source, b.At)
	}
	top, _, _ := strings.Cut(b.At[1:], "/")
	for _, r := range reservedTop {
		if top == r {
			return fmt.Errorf("sandbox: bind at %s: /%s is the sandbox's own", b.At, r)
		}
	}
	return nil
}

// runSetupStage starts the setup stage for cfg and follows it to its end.
func runSetupStage(ctx context.Context, ids subid.IDs, cfg setupConfig, spec Spec) (json.RawMessage, error) {
	rootless := os.Geteuid() != 0
	if ids.UIDs.Count < subid.SandboxSize || ids.GIDs.Count < subid.SandboxSize {
		return nil, fmt.Errorf("%w: no subordinate id range of %d ids (see subid.Lookup)", ErrSetup, subid.SandboxSize)
	}
	cfg.UID, cfg.GID = os.Getuid(), os.Getgid()
	if rootless {
		// The setup stage's namespace maps the user to 0 and the
		// subordinate range to 1..: the sandbox's 0 is 1 there.
		cfg.MapUID, cfg.MapGID = 1, 1
		cfg.OwnUID, cfg.OwnGID = 0, 0
	} else {
		cfg.MapUID, cfg.MapGID = ids.UIDs.Start, ids.GIDs.Start
		cfg.OwnUID, cfg.OwnGID = cfg.UID, cfg.GID
	}
	flags := uintptr(syscall.CLONE_NEWNS)
	stageName := stageSetup
	if rootless {
		flags |= syscall.CLONE_NEWUSER
		stageName = stageSetupUnmapped
	}
	log := spec.Log
	if log == nil {
		log = io.Discard
	}
	tail := &tailWriter{w: log, max: 20}
	st := stageCmd{name: stageName, flags: flags, stdin: spec.Stdin, stdout: io.Discard, stderr: tail}

	var ctl *os.File
	started := func(cmd *exec.Cmd, cfgW *os.File) error {
		ctl = cfgW
		if rootless {
			if err := mapIDs(cmd.Process.Pid, ids); err != nil {
				return err
			}
			if _, err := cfgW.Write([]byte("go\n")); err != nil {
				return err
			}
		}
		return writeLine(cfgW, cfg)
	}
	onMsg := func(m message) error {
		switch {
		case m.PID != 0:
			if spec.Started != nil {
				spec.Started(m.PID)
			}
			if spec.Net != nil {
				if err := spec.Net.Attach(m.PID); err != nil {
					return fmt.Errorf("%w: attach the network: %w", ErrSetup, err)
				}
			}
			_, err := ctl.Write([]byte("ready\n"))
			return err
		case m.Event != nil:
			if spec.OnEvent != nil {
				spec.OnEvent(m.Event)
			}
		}
		return nil
	}
	res, err := st.run(ctx, started, onMsg)
	if err != nil && errors.Is(err, errNoResult) {
		if t := tail.String(); t != "" {
			err = fmt.Errorf("%w: %s", err, t)
		}
	}
	return res, err
}

// mapIDs writes the setup stage's id maps with newuidmap and newgidmap: the
// user itself as 0, its subordinate range as 1...
func mapIDs(pid int, ids subid.IDs) error {
	p := strconv.Itoa(pid)
	for _, m := range []struct {
		tool string
		own  int
		r    subid.Range
	}{
		{"newuidmap", os.Getuid(), ids.UIDs},
		{"newgidmap", os.Getgid(), ids.GIDs},
	} {
		bin, err := exec.LookPath(m.tool)
		if err != nil {
			return fmt.Errorf("%w: %s not found (apt-get install uidmap): an ordinary user maps its subordinate ids with it", ErrSetup, m.tool)
		}
		out, err := exec.Command(bin, p, "0", strconv.Itoa(m.own), "1", "1", strconv.FormatUint(uint64(m.r.Start), 10),
			strconv.Itoa(subid.SandboxSize)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s: %v: %s", ErrSetup, m.tool, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Stage names (stageEnv values).
const (
	stageSetupUnmapped = "setup-unmapped"
	stageSetup         = "setup"
	stageInit          = "init"
	stageTree          = "tree"
	stageGuard         = "guard"
)

// stageCtl and stageMsgs are a stage's configuration pipe (also its
// lifeline) and message pipe, kept here so they are never collected.
var stageCtl, stageMsgs *os.File

// Main runs the sandbox stage this process was started as, and exits; in
// any other process it returns at once. Call it first thing in main, and
// in TestMain of packages whose tests run sandboxes.
func Main() {
	stage := os.Getenv(stageEnv)
	if stage == "" {
		return
	}
	os.Unsetenv(stageEnv)
	// no_new_privs, the capability bounding set and the parent-death signal
	// belong to a thread, and a child inherits those of the thread that
	// forks it: a stage does everything, forks included, on this one.
	runtime.LockOSThread()
	// The pipes to the parent are no program's business: close them on
	// exec (the stages pass them on explicitly).
	syscall.CloseOnExec(cfgFD)
	syscall.CloseOnExec(msgFD)
	stageCtl, stageMsgs = os.NewFile(cfgFD, "ctl"), os.NewFile(msgFD, "msgs")
	// The stages this one starts carry the same owner token.
	if len(os.Args) > 1 {
		owner = os.Args[1]
	}
	var err error
	switch stage {
	case stageSetupUnmapped:
		err = setupUnmapped()
	case stageSetup:
		err = runSetup()
	case stageInit:
		err = runInit()
	case stageTree:
		err = runTree()
	case stageGuard:
		err = runGuard()
	default:
		err = fmt.Errorf("unknown stage %q", stage)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", procName, stage, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stageCmd is a stage to start from the current process.
type stageCmd struct {
	name   string
	flags  uintptr
	attr   syscall.SysProcAttr // Cloneflags and Pdeathsig are set by run
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	env    []string
	// msgFile, when set, is the stage's message pipe: this process's own
	// fd 4 (the setup stage hands it to init), so run reads nothing.
	msgFile *os.File
	// deathSig is the stage's parent-death signal (default SIGKILL), and
	// cancelSig what cancelling the context sends it (default SIGKILL).
	deathSig, cancelSig syscall.Signal
}

// run starts the stage, calls started (which must write its
// configuration), then reads its messages until the last one and waits for
// it. Cancelling ctx kills the stage (and so, through the parent-death
// signals, everything below it).
func (st stageCmd) run(ctx context.Context, started func(*exec.Cmd, *os.File) error, onMsg func(message) error) (json.RawMessage, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	msgW := st.msgFile
	var msgR *os.File
	if msgW == nil {
		if msgR, msgW, err = os.Pipe(); err != nil {
			return nil, err
		}
		defer msgR.Close()
		defer msgW.Close()
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{procName + "-" + st.name}
	if o := currentOwner(); o != "" {
		cmd.Args = append(cmd.Args, o)
	}
	cmd.Env = append([]string{stageEnv + "=" + st.name}, st.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = st.stdin, st.stdout, st.stderr
	cmd.ExtraFiles = []*os.File{cfgR, msgW}
	cmd.Dir = "/"
	attr := st.attr
	attr.Cloneflags |= st.flags
	attr.Pdeathsig = syscall.SIGKILL
	if st.deathSig != 0 {
		attr.Pdeathsig = st.deathSig
	}
	cmd.SysProcAttr = &attr
	cmd.WaitDelay = 5 * time.Second

	// The parent-death signal follows the thread that started the child:
	// keep this goroutine on its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start the %s stage: %w", ErrSetup, st.name, err)
	}
	cfgR.Close()
	stop := context.AfterFunc(ctx, func() {
		if st.cancelSig != 0 {
			cmd.Process.Signal(st.cancelSig)
			return
		}
		cmd.Process.Kill()
	})
	defer stop()
	fail := func(err error) (json.RawMessage, error) {
		cmd.Process.Kill()
		cmd.Wait()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := started(cmd, cfgW); err != nil {
		return fail(err)
	}
	if msgR == nil {
		// Another process reads the messages: wait for the stage alone.
		err := cmd.Wait()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	msgW.Close()
	final, rerr := readMessages(msgR, onMsg)
	if rerr != nil && !errors.Is(rerr, errNoResult) {
		return fail(rerr)
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rerr != nil {
		if werr != nil {
			return nil, fmt.Errorf("%w (%s stage: %v)", rerr, st.name, werr)
		}
		return nil, rerr
	}
	if final.Error != "" {
		return nil, errors.New(final.Error)
	}
	return final.Result, nil
}

// tailWriter passes writes on to w and keeps the last max lines.
type tailWriter struct {
	w     io.Writer
	max   int
	lines []string
	part  []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.part = append(t.part, p...)
	for {
		i := strings.IndexByte(string(t.part), '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > t.max {
			t.lines = t.lines[1:]
		}
	}
	return t.w.Write(p)
}

func (t *tailWriter) String() string {
	var out []string
	for _, l := range t.lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, " | ")
}
