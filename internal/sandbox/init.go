package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// initConfig is the init stage's configuration.
type initConfig struct {
	Job string
	Arg json.RawMessage
	Net *netConfig
}

type netConfig struct {
	Iface, Addr, Gateway string
}

// Hostname is the sandbox's host name (its own UTS namespace).
const Hostname = "banger-build"

// runInit is the init stage: PID 1 of the sandbox's namespaces.
func runInit() error {
	ctl, msgs := stageCtl, &msgWriter{w: stageMsgs}
	if err := armDeathSignal(ctl); err != nil {
		return err
	}
	var cfg initConfig
	if err := readConfig(ctl, &cfg); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: read the configuration: %w", ErrSetup, err))
	}
	if err := enterRoot(); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: %w", ErrSetup, err))
	}
	if line, err := readLine(ctl); err != nil || line != "ready" {
		return msgs.done(nil, fmt.Errorf("%w: waiting for the network: %q %v", ErrSetup, line, err))
	}
	if err := setupNet(cfg.Net); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: network: %w", ErrSetup, err))
	}
	job, ok := lookupJob(cfg.Job)
	if !ok {
		return msgs.done(nil, fmt.Errorf("%w: no job %q in this binary", ErrSetup, cfg.Job))
	}
	res, err := job(&Sandbox{msgs: msgs}, cfg.Arg)
	return msgs.done(res, err)
}

// enterRoot makes the root the setup stage built this stage's root, with a
// /proc of its PID namespace and a /tmp of its own, and forbids gaining
// privileges by exec from here on.
func enterRoot() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// The root came from the setup stage's (more privileged) namespace, so
	// its mount is locked here; a bind of it is this namespace's own, which
	// pivot_root accepts.
	if err := unix.Mount(stagingRoot, stagingRoot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the root: %w", err)
	}
	root, err := unix.Open(stagingRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	proc, err := openBeneath(root, "proc", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(proc)
	if err := unix.Fchdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// A new proc can be mounted only while one is visible: before the old
	// root goes.
	if err := mountAt("proc", "", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC, proc, "/proc"); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	if err := unix.Sethostname([]byte(Hostname)); err != nil {
		return fmt.Errorf("set the host name: %w", err)
	}
	return nil
}

// setupNet brings up loopback and, when n is set, the interface the daemon
// put in this network namespace, with its address and default route.
func setupNet(n *netConfig) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if n == nil {
		return nil
	}
	l, err := netlink.LinkByName(n.Iface)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Iface, err)
	}
	addr, err := netlink.ParseAddr(n.Addr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("%s: address %s: %w", n.Iface, n.Addr, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s up: %w", n.Iface, err)
	}
	gw := net.ParseIP(n.Gateway)
	if gw == nil {
		return fmt.Errorf("gateway %q is no address", n.Gateway)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// Sandbox is what a Job runs in: the init stage, PID 1 of the sandbox.
type Sandbox struct {
	msgs *msgWriter
}

// Event sends v (as JSON) to Spec.OnEvent.
func (sb *Sandbox) Event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return sb.msgs.send(message{Event: b})
}

// TreeSpec is one run inside a tree (Sandbox.InTree).
type TreeSpec struct {
	// Root is the folder (in the sandbox) that becomes the run's root.
	Root string
	// System mounts, for the image's own programs, a /dev made for the run
	// (see the package documentation), a /proc of its PID namespace and a
	// tmpfs on /run, each on the tree's own dev, proc and run folders. A
	// symlink or file in their place is replaced by an empty folder, and a
	// missing one is created: they stay in the tree.
	System bool
	// Inputs are folders or files of the sandbox, seen read-only at
	// /run/banger/NAME (System only).
	Inputs []Input
	// Func names Go code to run (RegisterTreeFunc) with Arg; or else
	Func string
	Arg  any
	// Argv (absolute program path first) is run with exactly Env.
	Argv []string
	Env  []string
	// Stdin, Stdout and Stderr of the run (nil: empty, discarded).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Input is a file or folder of the sandbox offered to a tree run.
type Input struct {
	Name, Source string
}

// treeConfig is the tree stage's configuration.
type treeConfig struct {
	Root   string
	System bool
	Inputs []Input
	Func   string
	Arg    json.RawMessage
	Argv   []string
	Env    []string
}

// InTree runs ts in new mount and PID namespaces rooted at ts.Root, and
// returns the result of its Func (or nil for Argv). A program that exits
// non-zero is an error naming its status. Every process the run started
// is gone when InTree returns. Cancelling ctx kills the run. Call it from
// the job's own goroutine: the run inherits that thread's no_new_privs.
func (sb *Sandbox) InTree(ctx context.Context, ts TreeSpec) (json.RawMessage, error) {
	if (ts.Func == "") == (len(ts.Argv) == 0) {
		return nil, fmt.Errorf("sandbox: a tree run needs Func or Argv, not both")
	}
	if len(ts.Inputs) > 0 && !ts.System {
		return nil, fmt.Errorf("sandbox: tree inputs need System")
	}
	arg, err := json.Marshal(ts.Arg)
	if err != nil {
		return nil, err
	}
	cfg := treeConfig{Root: ts.Root, System: ts.System, Inputs: ts.Inputs, Func: ts.Func, Arg: arg, Argv: ts.Argv, Env: ts.Env}
	stderr := ts.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	stdout := ts.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	st := stageCmd{name: stageTree, flags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		stdin: ts.Stdin, stdout: stdout, stderr: stderr,
		env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "LC_ALL=C"}}
	return st.run(ctx, func(_ *exec.Cmd, w *os.File) error { return writeLine(w, cfg) }, func(message) error { return nil })
}
