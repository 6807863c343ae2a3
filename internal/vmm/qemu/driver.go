// Package qemu is the QEMU (-M microvm) driver for banger VMs.
//
// QEMU runs with least privilege: Start runs it as the Spec's RunAs user
// (a root daemon gives each running VM a uid and gid of its own, see
// package subid) from its first instruction, under its seccomp sandbox
// (-sandbox, which also sets no_new_privs), with an empty environment and
// / as its working directory. QEMU opens nothing by path: the daemon opens
// the console log, kernel, initrd, disk and TAP device, binds the QMP and
// agent sockets, and passes them as inherited descriptors (see Argv), so
// the VMM user needs no access to the VM folder, the runtime bundle or
// /dev/net/tun, and no file in the VM folder becomes its. A VMM escape is
// thus neither host root nor the daemon's user, and cannot reach another
// VM's files.
//
// QEMU is not daemonized (its sandbox forbids the fork): it runs as the
// daemon's child in a session of its own, reaped by the daemon while the
// daemon lives, and re-parented when the daemon exits or is killed; a
// daemon started later finds it again through the persisted vmm.State (pid
// plus start time, QMP socket).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// DefaultBinary is the QEMU binary looked up in $PATH when none is given.
const DefaultBinary = "qemu-system-x86_64"

// Timeouts used by Start and Stop.
const (
	launchTimeout = 30 * time.Second // launch until QMP answers
	qmpTimeout    = 5 * time.Second
	// askAgain: the power button is pressed again this often during a
	// graceful stop (see proc.Shutdown.AskAgain).
	askAgain = 5 * time.Second
	termWait = 5 * time.Second // after SIGTERM, before SIGKILL
	killWait = 5 * time.Second // after SIGKILL
)

var (
	_ vmm.Driver      = (*Driver)(nil)
	_ vmm.AgentDialer = (*Driver)(nil)
)

// Driver launches and controls QEMU microvm processes. It keeps no state of
// its own between calls: everything it needs is in the vmm.State, so a
// fresh Driver can control VMs another one started. It is safe for
// concurrent use.
type Driver struct {
	bin string
	log *slog.Logger
}

// New returns a driver that runs the QEMU binary bin: a path, or a bare
// name looked up in $PATH when a VM is started; "" means DefaultBinary. A nil logger
// discards logs.
func New(bin string, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{bin: bin, log: log.With("component", "vmm.qemu")}
}

// Name returns "qemu".
func (d *Driver) Name() string { return "qemu" }

// Binary returns the QEMU binary path the driver runs, resolving a bare
// name (DefaultBinary when none was given) in $PATH. The error says how to
// install QEMU.
func (d *Driver) Binary() (string, error) {
	return resolveBinary(d.bin)
}

func resolveBinary(bin string) (string, error) {
	if bin == "" {
		bin = DefaultBinary
	}
	if !strings.Contains(bin, "/") {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("%s not found in $PATH: install it (Debian: apt-get install qemu-system-x86) or set the qemu path in the config: %w", bin, err)
		}
		return p, nil
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("qemu binary: %w", err)
	}
	return bin, nil
}

var (
	idRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	macRE = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)
	tagRE = regexp.MustCompile(`^[a-z0-9]{1,36}$`)
)

// checkSpec validates spec before anything is launched.
func checkSpec(spec vmm.Spec) error {
	var errs []error
	if !idRE.MatchString(spec.ID) {
		errs = append(errs, fmt.Errorf("id %q: want [a-z0-9-]", spec.ID))
	}
	if spec.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus %d: want at least 1", spec.CPUs))
	}
	if spec.MemoryMiB < 64 {
		errs = append(errs, fmt.Errorf("memory %d MiB: want at least 64", spec.MemoryMiB))
	}
	if spec.Accel != "kvm" && spec.Accel != "tcg" {
		errs = append(errs, fmt.Errorf("accel %q: want \"kvm\" or \"tcg\"", spec.Accel))
	}
	if spec.ConsoleLog == "" {
		errs = append(errs, errors.New("console log: missing"))
	}
	if spec.TAP != "" && spec.DetachedNIC {
		errs = append(errs, errors.New("a detached network device has no tap"))
	}
	if spec.MemoryFile != "" && len(spec.Shares) > 0 {
		errs = append(errs, errors.New("shared folders need guest RAM of their own (a shared memfd), and their virtio-fs devices cannot be migrated: a VM with shared folders cannot be a template or a clone"))
	}
	if spec.IncomingState != "" && spec.MemoryFile == "" {
		errs = append(errs, errors.New("incoming state without its memory file"))
	}
	if spec.TAP != "" && !macRE.MatchString(spec.MAC) {
		errs = append(errs, fmt.Errorf("mac %q: want lower-case xx:xx:xx:xx:xx:xx (required with a tap device)", spec.MAC))
	}
	sockets := []string{QMPSocket(spec.Dir), AgentSocket(spec.Dir)}
	for i, sh := range spec.Shares {
		sockets = append(sockets, ShareSocket(spec.Dir, i))
		if !filepath.IsAbs(sh.HostDir) || !tagRE.MatchString(sh.Tag) {
			errs = append(errs, fmt.Errorf("share %d: want an absolute host folder and a tag of [a-z0-9], got %q %q", i, sh.HostDir, sh.Tag))
		}
	}
	errs = append(errs, vmm.CheckPaths(spec, sockets...)...)
	return errors.Join(errs...)
}

// Start launches QEMU for spec and returns once its QMP socket completed a
// handshake and answered query-status. It checks spec first (files and
// folder exist, socket paths fit the kernel's limit) and refuses to start
// while a previous QEMU of the same VM still answers on its sockets; stale
// sockets are removed. QEMU runs as spec.RunAs (with the group of /dev/kvm
// under KVM; an error says how to fix a /dev/kvm that user cannot open),
// its output appended to <Dir>/qemu.out. Under TCG it appends
// tsc_early_khz=<host TSC> (and tsc=reliable when the host's TSC is
// constant and nonstop) to the kernel command line unless already present
// (see tsc.go); the State's Argv shows the exact command line, its
// Notes which descriptor is which file. When QEMU fails to start, the end
// of its output is part of the error. On any error nothing is left running
// and the sockets Start bound are removed.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	st, err := d.start(ctx, spec)
	if err != nil {
		return vmm.State{}, fmt.Errorf("start qemu for vm %s: %w", spec.ID, err)
	}
	return st, nil
}

func (d *Driver) start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	bin, err := d.Binary()
	if err != nil {
		return vmm.State{}, err
	}
	if err := checkSpec(spec); err != nil {
		return vmm.State{}, fmt.Errorf("invalid spec: %w", err)
	}
	qmpPath, agentPath := QMPSocket(spec.Dir), ""
	if spec.Agent {
		agentPath = AgentSocket(spec.Dir)
	}
	sockets := []string{qmpPath, agentPath}
	if err := vmm.ClearStaleSockets("an earlier qemu of this VM", sockets...); err != nil {
		return vmm.State{}, err
	}
	var devices []string
	if spec.Accel == "kvm" {
		devices = append(devices, "/dev/kvm")
	}
	cred, runAs, err := vmm.Credential(spec.RunAs, devices...)
	if err != nil {
		return vmm.State{}, err
	}
	if spec.Accel == "tcg" {
		if _, err := hostTSCKHz(); err != nil {
			d.log.Warn("no TSC hint for the guest; it may hang calibrating its TSC, and its clock may drift", "vm", spec.ID, "err", err)
		}
		spec.KernelArgs = withTSCHint(spec.KernelArgs, tscArgs())
	}
	fsds, err := d.startVirtiofsds(spec)
	if err != nil {
		return vmm.State{}, err
	}
	argv, files := Argv(bin, spec)
	passed, err := openFiles(files)
	if err != nil {
		return vmm.State{}, errors.Join(err, fsds.kill())
	}
	t0 := time.Now()
	d.log.Debug("launching qemu", "vm", spec.ID, "argv", argv, "run_as", runAs)
	child, err := proc.Launch(proc.Command{Argv: argv, Files: passed, Output: OutFile(spec.Dir), Credential: cred, Log: d.log})
	closeFiles(passed) // QEMU holds its own copies now
	fail := func(err error) (vmm.State, error) {
		if child != nil && !child.Kill(killWait) {
			d.log.Warn("qemu did not exit after SIGKILL", "vm", spec.ID, "pid", child.PID)
		}
		return vmm.State{}, errors.Join(err, vmm.RemoveFiles(sockets...), fsds.kill())
	}
	if err != nil {
		return fail(err)
	}
	if err := waitQMP(ctx, qmpPath, child); err != nil {
		return fail(err)
	}
	if err := fsds.removeSockets(); err != nil {
		d.log.Warn("shared folder sockets left behind", "vm", spec.ID, "err", err)
	}
	if spec.IncomingState != "" {
		d.log.Debug("qemu answers qmp", "vm", spec.ID, "took", time.Since(t0).Round(time.Microsecond))
		t1 := time.Now()
		// Argv passes the state file last.
		if err := loadState(ctx, qmpPath, files[len(files)-1].FD); err != nil {
			if out := child.OutputTail(2000); out != "" {
				err = fmt.Errorf("%w; qemu printed: %s", err, out)
			}
			return fail(err)
		}
		d.log.Debug("qemu loaded the state and runs", "vm", spec.ID, "took", time.Since(t1).Round(time.Microsecond))
	}
	if out := child.OutputTail(2000); out != "" {
		d.log.Warn("qemu printed messages while starting", "vm", spec.ID, "output", out)
	}
	d.log.Info("qemu started", "vm", spec.ID, "pid", child.PID, "accel", spec.Accel, "run_as", runAs,
		"qmp_ready", time.Since(t0).Round(time.Millisecond))
	return vmm.State{
		Version:       vmm.StateVersion,
		Driver:        d.Name(),
		PID:           child.PID,
		StartTime:     child.StartTime,
		ControlSocket: qmpPath,
		AgentSocket:   agentPath,
		ConsoleLog:    spec.ConsoleLog,
		TAP:           spec.TAP,
		Accel:         spec.Accel,
		Argv:          argv,
		RunAs:         &runAs,
		Notes:         append([]string{filesNote(files)}, fsds.notes()...),
	}, nil
}

// waitQMP waits until QEMU answers on its QMP socket (greeting, capability
// negotiation, query-status), for at most launchTimeout. The daemon bound
// the socket, so a connection is accepted at once; QEMU greets once it has
// set the VM up. A QEMU that exits first ends the wait with its output.
func waitQMP(ctx context.Context, qmpPath string, child *proc.Child) error {
	ctx, cancel := context.WithTimeout(ctx, launchTimeout)
	defer cancel()
	go func() {
		select {
		case <-child.Exited():
			cancel()
		case <-ctx.Done():
		}
	}()
	exited := func() bool {
		select {
		case <-child.Exited():
			return true
		case <-time.After(time.Second): // a reset connection may come before the reaper
			return false
		}
	}
	q, err := DialQMP(ctx, qmpPath, launchTimeout)
	if err != nil {
		if exited() {
			return child.ExitError("its QMP socket answered")
		}
		return err
	}
	defer q.Close()
	if _, err := q.Execute(ctx, "query-status", nil); err != nil {
		if exited() {
			return child.ExitError("it answered query-status")
		}
		return err
	}
	return nil
}

// stateFiles are the files a VM's QEMU leaves: the QMP and agent sockets
// the daemon bound, and the pid file of a VM started with -daemonize by an
// earlier banger.
func stateFiles(st vmm.State) []string {
	files := []string{st.ControlSocket, st.AgentSocket}
	if st.ControlSocket != "" {
		files = append(files, filepath.Join(filepath.Dir(st.ControlSocket), PIDFileName))
	}
	return files
}

// Stop shuts the VM down. Unless force, it first asks the guest to power
// off (QMP system_powerdown, an ACPI power button press) and waits up to
// timeout for QEMU to exit; then it sends SIGTERM (QEMU exits cleanly,
// flushing its disk), waits up to 5 s, and finally SIGKILL. With force it
// starts at SIGTERM and waits only 1 s before SIGKILL. The QMP socket, agent
// socket and pid file are removed in every case; cleanup errors are joined.
// A VM that is not running returns nil (after removing leftover files).
// When ctx ends early Stop skips the remaining waits and escalates to
// SIGKILL at once.
func (d *Driver) Stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	return vmm.StopProcess(ctx, st, force, proc.Shutdown{
		Name:     "qemu",
		Ask:      func(ctx context.Context) error { return d.powerdown(ctx, st.ControlSocket) },
		AskAgain: askAgain,
		Timeout:  timeout,
		TermWait: termWait,
		KillWait: killWait,
		Log:      d.log,
	}, stateFiles(st)...)
}

func (d *Driver) powerdown(ctx context.Context, qmpPath string) error {
	_, err := qmpCall(ctx, qmpPath, "system_powerdown")
	return err
}

// Alive reports whether the process in st is still the QEMU that was
// launched: the pid exists, is not a zombie, and has the recorded start
// time.
func (d *Driver) Alive(st vmm.State) bool {
	return proc.Alive(st.PID, st.StartTime)
}

// Recover reattaches to the QEMU described by st after a daemon restart: the
// process must be alive and answer QMP query-status. It returns an error
// wrapping vmm.ErrNotRunning when the process is gone (or its pid was
// reused). When the process is alive but QMP does not answer, the error
// does NOT wrap ErrNotRunning: the VMM still runs (Stop can still kill it),
// and QMP may simply be held by another client, since QEMU serves one at a
// time.
func (d *Driver) Recover(ctx context.Context, st vmm.State) error {
	if err := vmm.CheckAdoptable(st, d.Name()); err != nil {
		return err
	}
	if _, err := qmpCall(ctx, st.ControlSocket, "query-status"); err != nil {
		return fmt.Errorf("recover qemu pid %d: process alive but %w", st.PID, err)
	}
	return nil
}
