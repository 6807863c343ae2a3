// Package qemu is the QEMU (-M microvm) driver for banger VMs.
//
// QEMU runs with -daemonize: the process that Start executes forks the real
// VMM into its own session and exits once the VM is set up, so the VMM is
// never a child of the daemon. It survives the daemon exiting or being
// killed and never becomes the daemon's zombie. The daemon finds it again
// through the persisted vmm.State (pid plus start time, QMP socket).
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/safesocket"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
	"golang.org/x/sys/unix"
)

// DefaultBinary is the QEMU binary looked up in $PATH when none is given.
const DefaultBinary = "qemu-system-x86_64"

// Timeouts used by Start and Stop.
const (
	launchTimeout = 30 * time.Second // the launcher exits once the VM is set up
	qmpTimeout    = 5 * time.Second
	termWait      = 5 * time.Second // after SIGTERM, before SIGKILL
	killWait      = 5 * time.Second // after SIGKILL
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
	if fi, err := os.Stat(spec.Dir); err != nil {
		errs = append(errs, fmt.Errorf("vm folder: %w", err))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("vm folder %s is not a directory", spec.Dir))
	}
	file := func(what, p string) {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: path must be absolute", what, p))
			return
		}
		if fi, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		} else if !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("%s %s is not a regular file", what, p))
		}
	}
	file("kernel", spec.Kernel)
	if spec.Initrd != "" {
		file("initrd", spec.Initrd)
	}
	if spec.Disk != "" {
		file("disk", spec.Disk)
	}
	for what, p := range map[string]string{"vm folder": spec.Dir, "console log": spec.ConsoleLog} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: path must be absolute", what, p))
		}
	}
	if _, err := os.Stat(filepath.Dir(spec.ConsoleLog)); err != nil {
		errs = append(errs, fmt.Errorf("console log folder: %w", err))
	}
	if spec.TAP != "" {
		if len(spec.TAP) > unix.IFNAMSIZ-1 {
			errs = append(errs, fmt.Errorf("tap name %q: longer than %d bytes", spec.TAP, unix.IFNAMSIZ-1))
		}
		if !macRE.MatchString(spec.MAC) {
			errs = append(errs, fmt.Errorf("mac %q: want lower-case xx:xx:xx:xx:xx:xx (required with a tap device)", spec.MAC))
		}
	}
	socks := []string{QMPSocket(spec.Dir)}
	if spec.AgentSocket != "" {
		if !filepath.IsAbs(spec.AgentSocket) {
			errs = append(errs, fmt.Errorf("agent socket %q: path must be absolute", spec.AgentSocket))
		}
		socks = append(socks, spec.AgentSocket)
	}
	for _, s := range socks {
		if err := paths.CheckSocketPath(s); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clearStalePIDFile removes a leftover pid file unless a live QEMU still
// holds the lock QEMU takes on it.
func clearStalePIDFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	err = unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk)
	f.Close()
	if err != nil {
		return fmt.Errorf("check lock on %s: %w", p, err)
	}
	if lk.Type != unix.F_UNLCK {
		return fmt.Errorf("%s is locked by running process %d: the VM's QEMU is still running", p, lk.Pid)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Start launches QEMU for spec and returns once QEMU has daemonized and its
// QMP socket completed a handshake. It checks spec first (files and folder
// exist, socket paths fit the kernel's limit) and refuses to start while a
// previous QEMU of the same VM still answers on its sockets or holds its pid
// file; stale files are removed. Under TCG it appends tsc_early_khz=<host
// TSC> (and tsc=reliable when the host's TSC is constant and nonstop) to
// the kernel command line unless already present (see tsc.go); the
// State's Argv shows the exact command line. The launcher's stderr is part
// of the error when QEMU fails to start. On any error nothing is left
// running and the files Start created are removed.
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
	qmpPath, pidPath := QMPSocket(spec.Dir), PIDFile(spec.Dir)
	if err := clearStalePIDFile(pidPath); err != nil {
		return vmm.State{}, err
	}
	for _, p := range []string{qmpPath, spec.AgentSocket} {
		if p == "" {
			continue
		}
		if err := safesocket.ClearStale(p, "an earlier qemu of this VM"); err != nil {
			return vmm.State{}, err
		}
	}
	if spec.Accel == "tcg" {
		if _, err := hostTSCKHz(); err != nil {
			d.log.Warn("no TSC hint for the guest; it may hang calibrating its TSC, and its clock may drift", "vm", spec.ID, "err", err)
		}
		spec.KernelArgs = withTSCHint(spec.KernelArgs, tscArgs())
	}
	argv := Argv(bin, spec)

	t0 := time.Now()
	launchCtx, cancel := context.WithTimeout(ctx, launchTimeout)
	defer cancel()
	cmd := exec.CommandContext(launchCtx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	// Own process group, so a terminal's Ctrl-C aimed at a foreground
	// daemon does not reach the launcher; QEMU's daemon child calls setsid
	// itself. No Pdeathsig: the VMM must outlive the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	d.log.Debug("launching qemu", "vm", spec.ID, "argv", argv)
	runErr := cmd.Run()

	files := []string{qmpPath, pidPath, spec.AgentSocket}
	fail := func(err error) (vmm.State, error) {
		// Whatever got that far (daemon child, pid file, sockets) goes.
		if pid, e := readPIDFile(pidPath); e == nil {
			if start, e := proc.StartTime(pid); e == nil && isOurQEMU(pid, qmpPath) {
				d.kill(pid, start)
			}
		}
		return vmm.State{}, errors.Join(err, removeFiles(files...))
	}
	if runErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "(no output)"
		}
		return fail(fmt.Errorf("%s: %w: %s", filepath.Base(bin), runErr, msg))
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		d.log.Warn("qemu printed warnings while starting", "vm", spec.ID, "output", msg)
	}
	pid, err := readPIDFile(pidPath)
	if err != nil {
		return fail(fmt.Errorf("qemu daemonized but: %w", err))
	}
	start, err := proc.StartTime(pid)
	if err != nil {
		return fail(fmt.Errorf("qemu pid %d from %s: %w", pid, pidPath, err))
	}
	st := vmm.State{
		Version:       vmm.StateVersion,
		Driver:        d.Name(),
		PID:           pid,
		StartTime:     start,
		ControlSocket: qmpPath,
		AgentSocket:   spec.AgentSocket,
		ConsoleLog:    spec.ConsoleLog,
		TAP:           spec.TAP,
		Accel:         spec.Accel,
		Argv:          argv,
	}
	// QEMU creates these under its own umask (027 after daemonizing);
	// only the user gets to drive the VM.
	for _, p := range []string{qmpPath, spec.AgentSocket, pidPath} {
		if p == "" {
			continue
		}
		if err := os.Chmod(p, 0o600); err != nil {
			d.kill(pid, start)
			return fail(fmt.Errorf("restrict %s: %w", p, err))
		}
	}
	launched := time.Since(t0)
	q, err := DialQMP(ctx, qmpPath, qmpTimeout)
	if err != nil {
		d.kill(pid, start)
		return fail(err)
	}
	_, err = q.Execute(ctx, "query-status", nil)
	q.Close()
	if err != nil {
		d.kill(pid, start)
		return fail(err)
	}
	d.log.Info("qemu started", "vm", spec.ID, "pid", pid, "accel", spec.Accel,
		"launch", launched.Round(time.Millisecond), "qmp_ready", time.Since(t0).Round(time.Millisecond))
	return st, nil
}

// isOurQEMU guards the cleanup kill in Start: the pid from the pid file must
// be a process whose command line names our QMP socket.
func isOurQEMU(pid int, qmpPath string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(escape(qmpPath)))
}

// readPIDFile reads the pid QEMU wrote; QEMU writes it before the launcher
// exits, so a short retry only covers a slow file system.
func readPIDFile(p string) (int, error) {
	var lastErr error
	for range 10 {
		b, err := os.ReadFile(p)
		if err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err == nil && pid > 0 {
				return pid, nil
			}
			lastErr = fmt.Errorf("bad pid file %s: %q", p, b)
		} else {
			lastErr = fmt.Errorf("read pid file: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, lastErr
}

// kill sends SIGKILL and waits briefly; used on failed starts.
func (d *Driver) kill(pid int, start uint64) {
	if err := proc.Signal(pid, start, syscall.SIGKILL); err != nil {
		d.log.Warn("kill qemu", "pid", pid, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	if err := proc.WaitExit(ctx, pid, start, 0); err != nil {
		d.log.Warn("qemu did not exit after SIGKILL", "pid", pid, "err", err)
	}
}

// removeFiles removes paths, ignoring empty ones and ones already gone, and
// joins the other errors.
func removeFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stateFiles are the files a VM's QEMU owns: QMP socket, agent socket and
// pid file (next to the QMP socket).
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
	var errs []error
	if proc.Alive(st.PID, st.StartTime) {
		if err := d.stop(ctx, st, force, timeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeFiles(stateFiles(st)...); err != nil {
		errs = append(errs, fmt.Errorf("remove vmm files: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop qemu pid %d: %w", st.PID, err)
	}
	return nil
}

func (d *Driver) stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	return proc.Stop(ctx, st.PID, st.StartTime, force, proc.Shutdown{
		Name:     "qemu",
		Ask:      func(ctx context.Context) error { return d.powerdown(ctx, st.ControlSocket) },
		Timeout:  timeout,
		TermWait: termWait,
		KillWait: killWait,
		Log:      d.log,
	})
}

func (d *Driver) powerdown(ctx context.Context, qmpPath string) error {
	if qmpPath == "" {
		return errors.New("no qmp socket in state")
	}
	q, err := DialQMP(ctx, qmpPath, qmpTimeout)
	if err != nil {
		return err
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	_, err = q.Execute(ctx, "system_powerdown", nil)
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
	if st.Driver != "" && st.Driver != d.Name() {
		return fmt.Errorf("recover: state belongs to driver %q, not qemu", st.Driver)
	}
	if !proc.Alive(st.PID, st.StartTime) {
		return fmt.Errorf("recover qemu pid %d: %w", st.PID, vmm.ErrNotRunning)
	}
	q, err := DialQMP(ctx, st.ControlSocket, qmpTimeout)
	if err != nil {
		return fmt.Errorf("recover qemu pid %d: process alive but %w", st.PID, err)
	}
	defer q.Close()
	qctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	if _, err := q.Execute(qctx, "query-status", nil); err != nil {
		return fmt.Errorf("recover qemu pid %d: process alive but %w", st.PID, err)
	}
	return nil
}
