// Package firecracker is the Firecracker driver for banger VMs: request
// bodies for Firecracker's v1.16.1 API (built by pure functions from a
// vmm.Spec), a small client for that API over its Unix socket, the hybrid
// vsock handshake (DialVsock), and a vmm.Driver that launches and controls
// Firecracker processes.
//
// A root daemon gives each running VM a uid and gid of its own (Spec.RunAs,
// see package subid), and launches Firecracker through Firecracker's
// jailer when it has one (WithJailer, package jailer): the jailer, as
// root, builds a chroot <chroot base>/firecracker/<VM id>/root, copies
// Firecracker in, makes its cgroups (a CPU quota of the VM's vCPUs, a
// memory limit of its memory plus an overhead), pivot_roots into the
// chroot, makes /dev/kvm and /dev/net/tun there, drops to the VM's ids and
// execs Firecracker in place (the pid Start launched is the VMM). Start
// first hard-links the kernel, initrd and disk into the chroot (or binds
// them, across file systems), the disk handed to the VM's user; the API
// and vsock sockets and Firecracker's log are in the chroot; the State
// records the chroot and cgroups, which Stop removes once the VMM is gone
// (the log kept beside the console log).
//
// Without a jailer (none found, or a daemon that is not root) Firecracker
// runs unjailed as the Spec's RunAs user from its first instruction, with
// an empty environment, and reaches only what it is given: a folder of its
// own (<Dir>/firecracker) through an inherited descriptor, where it
// creates its API and vsock sockets and writes its log; the kernel, initrd
// and disk as inherited descriptors it reopens through /proc/self/fd; the
// TAP device, which the daemon creates owned by that user; /dev/kvm and
// /dev/net/tun, which that user must be able to open (Start says how when
// it cannot). The disk is handed to that user, since Firecracker opens it
// read-write. banger doctor warns that Firecracker would run unjailed.
//
// Firecracker has no daemonize option, so Start launches it as its own
// child in a new session (setsid), with stdin on /dev/null and its output in
// files of the VM folder, and reaps it from a goroutine while the daemon
// lives. The process does not depend on the daemon: it survives the daemon
// exiting or being killed (it is then re-parented), and a daemon started
// later finds it again through the persisted vmm.State (pid plus start
// time, API socket).
//
// The tests run this driver against fcsim, a Firecracker simulator that
// follows the v1.16.1 specification and source, because the real binary
// cannot run on banger's build machines: its unit tests with the
// simulator's in-process guest, and the e2e suite through the daemon
// (NewSimulator) with the guest booted for real under QEMU; both jailed by
// jailersim, a simulator of the jailer. A test against
// a real Firecracker runs where one is present and KVM can run guests
// (`make test-firecracker`).
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/vmlinux"
	"github.com/bangerhq/banger/internal/vmm/proc"
	"golang.org/x/sys/unix"
)

// DefaultBinary is the Firecracker binary looked up in $PATH when none is
// given.
const DefaultBinary = "firecracker"

// BundlePath is where a runtime bundle keeps Firecracker, relative to the
// bundle's folder.
const BundlePath = "firecracker/firecracker"

// Timeouts used by Start and Stop.
const (
	apiReadyTimeout = 10 * time.Second // launch until the API socket answers
	apiTimeout      = 5 * time.Second  // one API call
	termWait        = 5 * time.Second  // after SIGTERM, before SIGKILL
	killWait        = 5 * time.Second  // after SIGKILL
)

var (
	_ vmm.Driver      = (*Driver)(nil)
	_ vmm.AgentDialer = (*Driver)(nil)
	_ vmm.VsockUser   = (*Driver)(nil)
	_ vmm.Preflighter = (*Driver)(nil)
)

// Driver launches and controls Firecracker processes. It keeps no state of
// its own between calls: everything it needs is in the vmm.State, so a
// fresh Driver can control VMs another one started. It is safe for
// concurrent use.
type Driver struct {
	bin string
	log *slog.Logger
	// Tests point these elsewhere: the simulator opens no device, and
	// needs its settings from the environment.
	devKVM, devTUN string
	inheritEnv     bool
	// sim is true for the Firecracker simulator (see NewSimulator).
	sim bool
	// jailer, when set, launches Firecracker (see WithJailer), with its
	// chroots under chrootBase; jailerSim when it is a simulator.
	jailer, chrootBase string
	jailerSim          bool
}

// New returns a driver that runs the Firecracker binary bin: a path (see
// FindBinary), or a bare name looked up in $PATH when a VM is started; ""
// means DefaultBinary. A nil logger discards logs.
func New(bin string, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{bin: bin, log: log.With("component", "vmm.firecracker"), devKVM: "/dev/kvm", devTUN: "/dev/net/tun"}
}

// Name returns "firecracker".
func (d *Driver) Name() string { return "firecracker" }

// Binary returns the Firecracker binary path the driver runs, resolving a
// bare name in $PATH. The error wraps exec.ErrNotFound when there is none.
func (d *Driver) Binary() (string, error) {
	bin := d.bin
	if bin == "" {
		bin = DefaultBinary
	}
	if !strings.Contains(bin, "/") {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("%s not found in $PATH: install Firecracker v%s (or put it in the runtime bundle as %s): %w", bin, fcapi.Version, BundlePath, err)
		}
		return p, nil
	}
	if err := checkExecutable(bin); err != nil {
		return "", fmt.Errorf("firecracker binary: %w", err)
	}
	return bin, nil
}

// FindBinary returns the Firecracker binary to use: the runtime bundle's
// <runtimeDir>/firecracker/firecracker when it exists, else firecracker in
// $PATH. runtimeDir may be "" (no bundle). When neither exists the error
// names both places and wraps exec.ErrNotFound; a bundle file that exists
// but is not executable is an error of its own rather than a silent
// fallback to $PATH.
func FindBinary(runtimeDir string) (string, error) {
	bundled := ""
	if runtimeDir != "" {
		bundled = filepath.Join(runtimeDir, filepath.FromSlash(BundlePath))
		if _, err := os.Stat(bundled); err == nil {
			if err := checkExecutable(bundled); err != nil {
				return "", fmt.Errorf("firecracker in the runtime bundle: %w", err)
			}
			return bundled, nil
		}
	}
	if p, err := exec.LookPath(DefaultBinary); err == nil {
		return p, nil
	}
	where := "in $PATH"
	if bundled != "" {
		where = "at " + bundled + " (runtime bundle) or in $PATH"
	}
	return "", fmt.Errorf("firecracker not found %s: install Firecracker v%s there: %w", where, fcapi.Version, exec.ErrNotFound)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return fmt.Errorf("%s is not executable: %w", p, err)
	}
	return nil
}

var (
	// Firecracker's own rule for --id.
	idRE  = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	macRE = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
)

// checkSpec validates spec before anything is launched, the kernel
// included: Firecracker would refuse anything but an ELF vmlinux only at
// InstanceStart (see package vmlinux).
func checkSpec(spec vmm.Spec, sockets ...string) error {
	var errs []error
	if !idRE.MatchString(spec.ID) {
		errs = append(errs, fmt.Errorf("id %q: firecracker wants 1-64 characters of [A-Za-z0-9-]", spec.ID))
	}
	if spec.CPUs < 1 || spec.CPUs > 32 {
		errs = append(errs, fmt.Errorf("cpus %d: firecracker wants 1 to 32", spec.CPUs))
	}
	if spec.MemoryMiB < 1 {
		errs = append(errs, fmt.Errorf("memory %d MiB: want at least 1", spec.MemoryMiB))
	}
	if spec.TAP != "" && !macRE.MatchString(spec.MAC) {
		errs = append(errs, fmt.Errorf("mac %q: want xx:xx:xx:xx:xx:xx (required with a tap device)", spec.MAC))
	}
	switch {
	case spec.VsockCID != 0 && spec.VsockCID < 3:
		errs = append(errs, fmt.Errorf("vsock cid %d: want 3 or more (0 for no vsock device)", spec.VsockCID))
	case spec.VsockCID != 0 && !spec.Agent:
		errs = append(errs, fmt.Errorf("vsock cid %d without the agent channel: the vsock device is the agent's", spec.VsockCID))
	case spec.VsockCID == 0 && spec.Agent:
		errs = append(errs, errors.New("agent channel without a vsock cid: under firecracker the agent channel is a vsock device"))
	}
	if fi, err := os.Stat(spec.Kernel); err == nil && fi.Mode().IsRegular() {
		if _, err := vmlinux.Check(spec.Kernel); err != nil {
			errs = append(errs, fmt.Errorf("kernel %s: %w: firecracker boots only an uncompressed ELF vmlinux (x86-64, with a PVH note or a 64-bit entry point); use the runtime bundle's kernel/vmlinux, or take the vmlinux out of a bzImage (the kernel's scripts/extract-vmlinux)", spec.Kernel, err))
		}
	}
	switch {
	case spec.DetachedNIC:
		errs = append(errs, errors.New("a network device without a tap: firecracker has none; give the guest a tap of its own (a clone's replaces it)"))
	case spec.IncomingState != "" && (spec.MemoryFile == "" || spec.MemoryShared):
		errs = append(errs, errors.New("a snapshot to load (IncomingState) needs its memory file (MemoryFile), mapped privately"))
	case spec.IncomingState != "":
		for _, p := range []string{spec.IncomingState, spec.MemoryFile} {
			if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				errs = append(errs, fmt.Errorf("snapshot file %s: want a regular file (%v)", p, err))
			}
		}
	}
	errs = append(errs, vmm.CheckPaths(spec, sockets...)...)
	return errors.Join(errs...)
}

// rotateLog keeps the previous Firecracker log as <log>.1 and creates an
// empty log with mode 0600 owned by id: Firecracker opens log_path without
// O_APPEND or O_TRUNC, so writing into an old log would garble it.
func rotateLog(p string, id vmm.Identity) error {
	if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keep previous firecracker log: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create firecracker log: %w", err)
	}
	defer f.Close()
	if err := f.Chown(int(id.UID), int(id.GID)); err != nil {
		return fmt.Errorf("hand firecracker log to %s: %w", id, err)
	}
	return nil
}

// prepareJail makes the jail folder, owned by id with mode 0700, and a
// fresh log in it. A jail left by an earlier run (perhaps of another uid)
// is taken over; its stale sockets were removed before.
func prepareJail(dir string, id vmm.Identity) error {
	jail := JailDir(dir)
	if err := os.Mkdir(jail, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create firecracker folder: %w", err)
	}
	fi, err := os.Lstat(jail)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder: remove it", jail)
	}
	if err := os.Lchown(jail, int(id.UID), int(id.GID)); err != nil {
		return fmt.Errorf("hand %s to %s: %w", jail, id, err)
	}
	if err := os.Chmod(jail, 0o700); err != nil {
		return err
	}
	return rotateLog(LogFile(dir), id)
}

// handOver gives the files Firecracker opens read-write by path (the disk)
// to id, when Firecracker runs as someone else than their owner.
func handOver(files []File, id vmm.Identity) error {
	for _, f := range files {
		if !f.RW {
			continue
		}
		if err := os.Chown(f.Path, int(id.UID), int(id.GID)); err != nil {
			return fmt.Errorf("hand %s to %s, which firecracker runs as: %w", f.Path, id, err)
		}
	}
	return nil
}

// tapOwner returns the uid that owns the TAP device name, and false when it
// cannot be read (no such device in this namespace).
func tapOwner(name string) (int, bool) {
	b, err := os.ReadFile("/sys/class/net/" + name + "/owner")
	if err != nil {
		return 0, false
	}
	uid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return uid, err == nil
}

// openFiles opens files for Firecracker in descriptor order.
func openFiles(files []File) ([]*os.File, error) {
	var out []*os.File
	for _, f := range files {
		var fh *os.File
		var err error
		switch {
		case f.Dir:
			fh, err = os.OpenFile(f.Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		case f.RW:
			fh, err = os.OpenFile(f.Path, os.O_RDWR, 0)
		default:
			fh, err = os.Open(f.Path)
		}
		if err != nil {
			closeFiles(out)
			return nil, fmt.Errorf("open %s for firecracker: %w", f.Path, err)
		}
		out = append(out, fh)
	}
	return out, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Start launches Firecracker for spec and returns once the guest has been
// started (InstanceStart answered). It checks spec first (files and folder
// exist, id and CID valid, socket paths within the kernel's limit) and
// refuses to start while something still answers on the VM's API or vsock
// socket; stale sockets are removed. Firecracker runs as spec.RunAs (see
// the package comment for what it is given; a /dev/kvm or /dev/net/tun it
// cannot open, or a TAP device owned by another user, is an error saying
// how to fix it), in its own session with stdin on /dev/null, the serial
// console appended to spec.ConsoleLog (see Serial for why through stdout)
// and stderr appended to <Dir>/firecracker.out; it is configured with
// ConfigRequests(View(spec)). On any error nothing is left running, the
// sockets are removed, and Firecracker's fault message (or its output when
// it exited) is part of the error.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	st, err := d.start(ctx, spec)
	if err != nil {
		return vmm.State{}, fmt.Errorf("start firecracker for vm %s: %w", spec.ID, err)
	}
	return st, nil
}

// launchPlan is how Start launches one Firecracker: unjailed (planOpen)
// or through the jailer (planJail).
type launchPlan struct {
	argv  []string
	files []File // opened and inherited as descriptors 3, 4, ...
	cred  *syscall.Credential
	runAs vmm.Identity
	// api and vsock are the sockets' host paths ("" without vsock).
	api, vsock string
	// view is spec as Firecracker sees it.
	view vmm.Spec
	// chroot and cgroups are the jail's, when jailed.
	chroot  string
	cgroups []string
	notes   []string
	// undo removes what the plan made, after a failed launch.
	undo func() error
}

func (d *Driver) start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	bin, err := d.Binary()
	if err != nil {
		return vmm.State{}, err
	}
	if root := RootArgConflict(spec.KernelArgs); root != "" && spec.Disk != "" {
		d.log.Warn("kernel arguments name a root other than /dev/vda; firecracker appends root=/dev/vda, which wins", "vm", spec.ID, "root", root)
	}
	var p launchPlan
	if d.jailed(spec) {
		p, err = d.planJail(spec, bin)
	} else {
		p, err = d.planOpen(spec, bin)
	}
	if err != nil {
		return vmm.State{}, err
	}
	return d.launch(ctx, spec, p)
}

// launch launches Firecracker as p says, configures it with p.view and
// starts the guest; on error it undoes p.
func (d *Driver) launch(ctx context.Context, spec vmm.Spec, p launchPlan) (vmm.State, error) {
	if uid, ok := tapOwner(spec.TAP); ok && spec.TAP != "" && uid != int(p.runAs.UID) && uid != -1 {
		return vmm.State{}, errors.Join(fmt.Errorf("tap %s is owned by uid %d, but firecracker runs as %s and opens it by name: create it owned by that uid", spec.TAP, uid, p.runAs), p.cleanup())
	}
	passed, err := openFiles(p.files)
	if err != nil {
		return vmm.State{}, errors.Join(err, p.cleanup())
	}
	t0 := time.Now()
	d.log.Debug("launching firecracker", "vm", spec.ID, "argv", p.argv, "run_as", p.runAs)
	var env []string
	if d.inheritEnv {
		env = os.Environ()
	}
	child, err := proc.Launch(proc.Command{Argv: p.argv, Files: passed, Stdout: spec.ConsoleLog, Output: OutFile(spec.Dir),
		Credential: p.cred, Env: env, Log: d.log})
	closeFiles(passed)
	sockets := []string{p.api, p.vsock}
	fail := func(err error) (vmm.State, error) {
		if child != nil && !child.Kill(killWait) {
			d.log.Warn("firecracker did not exit after SIGKILL", "vm", spec.ID, "pid", child.PID)
			return vmm.State{}, errors.Join(err, vmm.RemoveFiles(sockets...))
		}
		return vmm.State{}, errors.Join(err, vmm.RemoveFiles(sockets...), p.cleanup())
	}
	if err != nil {
		return fail(err)
	}
	client := NewClient(p.api, apiTimeout)
	info, err := waitAPI(ctx, client, child)
	if err != nil {
		return fail(err)
	}
	if info.ID != spec.ID {
		return fail(fmt.Errorf("the api socket %s answers with instance id %q, want %q", p.api, info.ID, spec.ID))
	}
	ready := time.Since(t0)
	reqs := ConfigRequests(p.view)
	if spec.IncomingState != "" {
		reqs = LoadRequests(p.view)
	}
	for _, r := range reqs {
		c := client
		if r.Path == "/snapshot/load" {
			c = NewClient(p.api, snapshotTimeout)
		}
		if err := c.Put(ctx, r.Path, r.Body); err != nil {
			return fail(d.withOutput(fmt.Errorf("configure %s: %w", r.What, err), child))
		}
	}
	// The sockets need no chmod (which would follow a link Firecracker
	// put in their place): only the jail's owner and root reach them.
	if spec.IncomingState == "" {
		if err := client.Put(ctx, "/actions", Action(fcapi.ActionInstanceStart)); err != nil {
			return fail(d.withOutput(fmt.Errorf("start the guest: %w", err), child))
		}
	}
	d.log.Info("firecracker started", "vm", spec.ID, "pid", child.PID, "run_as", p.runAs, "jailed", p.chroot != "",
		"api_ready", ready.Round(time.Millisecond), "guest_started", time.Since(t0).Round(time.Millisecond))
	notes := p.notes
	accel := "kvm" // Firecracker runs on KVM only
	if d.sim {
		accel, notes = SimulatorAccel, append(notes, simulatorNote)
	}
	runAs := p.runAs
	saveMemory := ""
	if spec.MemoryShared {
		saveMemory = spec.MemoryFile
	}
	return vmm.State{
		SaveMemory:    saveMemory,
		Version:       vmm.StateVersion,
		Driver:        d.Name(),
		PID:           child.PID,
		StartTime:     child.StartTime,
		ControlSocket: p.api,
		AgentSocket:   p.vsock,
		ConsoleLog:    spec.ConsoleLog,
		TAP:           spec.TAP,
		Accel:         accel,
		Argv:          p.argv,
		VsockCID:      spec.VsockCID,
		RunAs:         &runAs,
		Chroot:        p.chroot,
		Cgroups:       p.cgroups,
		Notes:         notes,
	}, nil
}

func (p launchPlan) cleanup() error {
	if p.undo == nil {
		return nil
	}
	return p.undo()
}

// planOpen prepares an unjailed launch: Firecracker runs as spec.RunAs
// from its first instruction, in the jail folder <Dir>/firecracker it
// reaches through an inherited descriptor, given the kernel, initrd and
// disk as inherited descriptors.
func (d *Driver) planOpen(spec vmm.Spec, bin string) (launchPlan, error) {
	// The longest socket: a listener for guest-initiated vsock connections.
	if err := checkSpec(spec, APISocket(spec.Dir), ListenerSocket(spec.Dir, math.MaxUint32)); err != nil {
		return launchPlan{}, fmt.Errorf("invalid spec: %w", err)
	}
	p := launchPlan{api: APISocket(spec.Dir), view: View(spec)}
	if spec.Agent {
		p.vsock = VsockSocket(spec.Dir)
	}
	if err := vmm.ClearStaleSockets("an earlier firecracker of this VM", p.api, p.vsock); err != nil {
		return launchPlan{}, err
	}
	var devices []string
	if !d.sim {
		devices = append(devices, d.devKVM)
	}
	if spec.TAP != "" {
		devices = append(devices, d.devTUN)
	}
	var err error
	if p.cred, p.runAs, err = vmm.Credential(spec.RunAs, devices...); err != nil {
		return launchPlan{}, err
	}
	if err := prepareJail(spec.Dir, p.runAs); err != nil {
		return launchPlan{}, err
	}
	p.argv, p.files = Argv(bin, spec)
	if spec.RunAs != nil {
		if err := handOver(p.files, p.runAs); err != nil {
			return launchPlan{}, err
		}
	}
	var fds []string
	for _, f := range p.files {
		fds = append(fds, fmt.Sprintf("%d=%s", f.FD, f.Path))
	}
	p.notes = []string{"descriptors: " + strings.Join(fds, ", ")}
	if d.jailer == "" && spec.RunAs != nil {
		p.notes = append(p.notes, "not jailed: no jailer was found (see banger doctor)")
	}
	return p, nil
}

// withOutput adds what Firecracker printed, when it exited, to err.
func (d *Driver) withOutput(err error, child *proc.Child) error {
	select {
	case <-child.Exited():
		return fmt.Errorf("%w; %w", err, child.ExitError("it was configured"))
	case <-time.After(100 * time.Millisecond):
		return err
	}
}

// waitAPI polls the API socket until GET / answers, the process exits, ctx
// ends or apiReadyTimeout passes.
func waitAPI(ctx context.Context, c *Client, child *proc.Child) (fcapi.InstanceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, apiReadyTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-child.Exited():
			return fcapi.InstanceInfo{}, child.ExitError("its api socket answered")
		default:
		}
		if _, err := os.Stat(c.Socket()); err == nil {
			info, err := c.InstanceInfo(ctx)
			if err == nil {
				return info, nil
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = fmt.Errorf("%s was never created", c.Socket())
			}
			return fcapi.InstanceInfo{}, fmt.Errorf("api socket not ready: %w (%w)", ctx.Err(), lastErr)
		case <-child.Exited():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// vsockListeners returns the guest-to-host listener sockets of the hybrid
// vsock socket uds: "<uds>_<port>" files that are sockets.
func vsockListeners(uds string) ([]string, error) {
	if uds == "" {
		return nil, nil
	}
	dir, base := filepath.Split(uds)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		port, ok := strings.CutPrefix(e.Name(), base+"_")
		if !ok || e.Type() != fs.ModeSocket {
			continue
		}
		if _, err := strconv.ParseUint(port, 10, 32); err != nil {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out, nil
}

// Stop shuts the VM down. Unless force, it first asks the guest to reboot
// (PUT /actions SendCtrlAltDel; with reboot=k on the kernel command line a
// guest reset ends Firecracker) and waits up to timeout for the process to
// exit; then it sends SIGTERM, waits up to 5 s (1 s with force), and
// finally SIGKILL. Signals go through proc.Signal, which checks the
// process's identity. Afterwards the API socket, the vsock socket and its
// "<uds>_<port>" listener sockets are removed, and a jailed VMM's jail (its
// chroot, Firecracker's log kept beside the console log, and its cgroups);
// cleanup errors are joined.
// A VM that is not running returns nil (after removing leftover sockets).
// When ctx ends early Stop skips the remaining waits and escalates to
// SIGKILL at once.
func (d *Driver) Stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	listeners, err := vsockListeners(st.AgentSocket)
	if err != nil {
		d.log.Warn("list vsock listener sockets", "err", err)
	}
	err = vmm.StopProcess(ctx, st, force, proc.Shutdown{
		Name:     "firecracker",
		Ask:      func(ctx context.Context) error { return d.ctrlAltDel(ctx, st.ControlSocket) },
		Timeout:  timeout,
		TermWait: termWait,
		KillWait: killWait,
		Log:      d.log,
	}, append([]string{st.ControlSocket, st.AgentSocket}, listeners...)...)
	if st.Chroot != "" && !proc.Alive(st.PID, st.StartTime) {
		if st.ConsoleLog != "" {
			keepJailLog(st.Chroot, filepath.Dir(st.ConsoleLog))
		}
		if jerr := removeJail(st.Chroot, st.Cgroups); jerr != nil {
			err = errors.Join(err, fmt.Errorf("stop firecracker pid %d: remove its jail: %w", st.PID, jerr))
		}
	}
	return err
}

func (d *Driver) ctrlAltDel(ctx context.Context, apiPath string) error {
	if apiPath == "" {
		return errors.New("no api socket in state")
	}
	return NewClient(apiPath, apiTimeout).Put(ctx, "/actions", Action(fcapi.ActionSendCtrlAltDel))
}

// Alive reports whether the process in st is still the Firecracker that
// was launched: the pid exists, is not a zombie, and has the recorded start
// time.
func (d *Driver) Alive(st vmm.State) bool {
	return proc.Alive(st.PID, st.StartTime)
}

// Recover reattaches to the Firecracker described by st after a daemon
// restart: the process must be alive, its API socket must answer GET /,
// with the instance id of st.Argv's --id (when recorded), and the instance
// must be "Running" or "Paused" (vm pause). It returns an error wrapping vmm.ErrNotRunning when
// the process is gone (or its pid was reused). A live process whose API
// does not answer, or whose guest never started, gives an error that does NOT wrap ErrNotRunning: the VMM still
// runs, and Stop can still end it.
func (d *Driver) Recover(ctx context.Context, st vmm.State) error {
	if err := vmm.CheckAdoptable(st, d.Name()); err != nil {
		return err
	}
	info, err := NewClient(st.ControlSocket, apiTimeout).InstanceInfo(ctx)
	if err != nil {
		return fmt.Errorf("recover firecracker pid %d: process alive but %w", st.PID, err)
	}
	if i := slices.Index(st.Argv, "--id"); i >= 0 && i+1 < len(st.Argv) && info.ID != st.Argv[i+1] {
		return fmt.Errorf("recover firecracker pid %d: %s answers with instance id %q, want %q", st.PID, st.ControlSocket, info.ID, st.Argv[i+1])
	}
	if info.State != fcapi.StateRunning && info.State != fcapi.StatePaused {
		return fmt.Errorf("recover firecracker pid %d: instance state is %q, want %q or %q", st.PID, info.State, fcapi.StateRunning, fcapi.StatePaused)
	}
	return nil
}
