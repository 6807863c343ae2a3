// Package firecracker is the Firecracker driver for banger VMs: request
// bodies for Firecracker's v1.16.1 API (built by pure functions from a
// vmm.Spec), a small client for that API over its Unix socket, the hybrid
// vsock handshake (DialVsock), and a vmm.Driver that launches and controls
// Firecracker processes.
//
// Firecracker has no daemonize option, so Start launches it as its own
// child in a new session (setsid), with stdin on /dev/null and its output in
// files of the VM folder, and reaps it from a goroutine while the daemon
// lives. The process does not depend on the daemon: it survives the daemon
// exiting or being killed (it is then re-parented), and a daemon started
// later finds it again through the persisted vmm.State (pid plus start
// time, API socket).
//
// The tests run this driver against fcsim, a simulator of Firecracker's API
// that follows the v1.16.1 specification, because the real binary cannot be
// installed on banger's build machines; a test against a real Firecracker
// runs where one is present and KVM can run guests.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/safesocket"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
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
}

// New returns a driver that runs the Firecracker binary bin: a path (see
// FindBinary), or a bare name looked up in $PATH when a VM is started; ""
// means DefaultBinary. A nil logger discards logs.
func New(bin string, log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{bin: bin, log: log.With("component", "vmm.firecracker")}
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

// checkSpec validates spec before anything is launched.
func checkSpec(spec vmm.Spec) error {
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
	if !filepath.IsAbs(spec.Dir) {
		errs = append(errs, fmt.Errorf("vm folder %q: path must be absolute", spec.Dir))
	}
	if spec.ConsoleLog != "" {
		if !filepath.IsAbs(spec.ConsoleLog) {
			errs = append(errs, fmt.Errorf("console log %q: path must be absolute", spec.ConsoleLog))
		} else if _, err := os.Stat(filepath.Dir(spec.ConsoleLog)); err != nil {
			errs = append(errs, fmt.Errorf("console log folder: %w", err))
		}
	}
	if spec.TAP != "" {
		if len(spec.TAP) > unix.IFNAMSIZ-1 {
			errs = append(errs, fmt.Errorf("tap name %q: longer than %d bytes", spec.TAP, unix.IFNAMSIZ-1))
		}
		if !macRE.MatchString(spec.MAC) {
			errs = append(errs, fmt.Errorf("mac %q: want xx:xx:xx:xx:xx:xx (required with a tap device)", spec.MAC))
		}
	}
	socks := []string{APISocket(spec.Dir)}
	switch {
	case spec.VsockCID != 0 && spec.VsockCID < 3:
		errs = append(errs, fmt.Errorf("vsock cid %d: want 3 or more (0 for no vsock device)", spec.VsockCID))
	case spec.VsockCID != 0 && spec.AgentSocket == "":
		errs = append(errs, fmt.Errorf("vsock cid %d without an agent socket path for the hybrid vsock", spec.VsockCID))
	case spec.VsockCID == 0 && spec.AgentSocket != "":
		errs = append(errs, fmt.Errorf("agent socket %s without a vsock cid: under firecracker the agent socket is the vsock device's", spec.AgentSocket))
	}
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

// owner says who should own the sockets and files Start creates, and
// whether anything needs changing for that.
type owner struct{ uid, gid int }

func ownerOf(spec vmm.Spec) (owner, bool) {
	o := owner{uid: -1, gid: -1}
	if spec.OwnerUID >= 0 && spec.OwnerUID != os.Getuid() {
		o.uid = spec.OwnerUID
	}
	if spec.OwnerGID >= 0 && spec.OwnerGID != os.Getgid() {
		o.gid = spec.OwnerGID
	}
	return o, o.uid >= 0 || o.gid >= 0
}

// String reads like "uid 1000 gid 1000".
func (o owner) String() string {
	var parts []string
	if o.uid >= 0 {
		parts = append(parts, "uid "+strconv.Itoa(o.uid))
	}
	if o.gid >= 0 {
		parts = append(parts, "gid "+strconv.Itoa(o.gid))
	}
	return strings.Join(parts, " ")
}

// openAppend opens (creating with mode 0600) p for appending.
func openAppend(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
}

// rotateLog keeps the previous Firecracker log as <log>.1 and creates an
// empty log with mode 0600: Firecracker opens log_path without O_APPEND or
// O_TRUNC, so writing into an old log would garble it.
func rotateLog(p string) error {
	if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keep previous firecracker log: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create firecracker log: %w", err)
	}
	return f.Close()
}

// Start launches Firecracker for spec and returns once the guest has been
// started (InstanceStart answered). It checks spec first (files and folder
// exist, id and CID valid, socket paths within the kernel's limit) and
// refuses to start while something still answers on the VM's API or vsock
// socket; stale sockets are removed. Firecracker runs in its own session
// with stdin on /dev/null, the serial console appended to spec.ConsoleLog
// (see Serial for why through stdout) and stderr appended to
// <Dir>/firecracker.out; it is configured with ConfigRequests. When
// spec.OwnerUID/OwnerGID are set (>= 0) and differ from this process's, the
// API and vsock sockets, the console log and the firecracker log files are
// chowned to them, and State.Notes says so. On any error nothing is left
// running, the sockets are removed, and Firecracker's fault message (or its
// stderr when it exited) is part of the error.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.State, error) {
	st, err := d.start(ctx, spec)
	if err != nil {
		return vmm.State{}, fmt.Errorf("start firecracker for vm %s: %w", spec.ID, err)
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
	if root := RootArgConflict(spec.KernelArgs); root != "" && spec.Disk != "" {
		d.log.Warn("kernel arguments name a root other than /dev/vda; firecracker appends root=/dev/vda, which wins", "vm", spec.ID, "root", root)
	}
	apiPath := APISocket(spec.Dir)
	for _, p := range []string{apiPath, spec.AgentSocket} {
		if p == "" {
			continue
		}
		if err := safesocket.ClearStale(p, "an earlier firecracker of this VM"); err != nil {
			return vmm.State{}, err
		}
	}
	own, chown := ownerOf(spec)
	if err := rotateLog(LogFile(spec.Dir)); err != nil {
		return vmm.State{}, err
	}
	outPath := OutFile(spec.Dir)
	out, err := openAppend(outPath)
	if err != nil {
		return vmm.State{}, fmt.Errorf("open firecracker output file: %w", err)
	}
	defer out.Close()
	// Only this launch's stderr goes into errors.
	var outStart int64
	if fi, err := out.Stat(); err == nil {
		outStart = fi.Size()
	}
	console := out
	if spec.ConsoleLog != "" {
		if console, err = openAppend(spec.ConsoleLog); err != nil {
			return vmm.State{}, fmt.Errorf("open console log: %w", err)
		}
		defer console.Close()
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return vmm.State{}, err
	}
	defer devNull.Close()
	var chowned []string
	if chown {
		for _, p := range []string{spec.ConsoleLog, LogFile(spec.Dir), outPath} {
			if p == "" {
				continue
			}
			if err := os.Chown(p, own.uid, own.gid); err != nil {
				return vmm.State{}, fmt.Errorf("hand %s to %s (Spec.OwnerUID/OwnerGID; -1 leaves ownership alone): %w", p, own, err)
			}
		}
		chowned = append(chowned, "console log and firecracker log files")
	}

	argv := Argv(bin, spec)
	t0 := time.Now()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = devNull
	cmd.Stdout = console
	cmd.Stderr = out
	cmd.Dir = spec.Dir
	// A session of its own: no controlling terminal, no signals meant for
	// the daemon's process group. No Pdeathsig: the VMM must outlive the
	// daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d.log.Debug("launching firecracker", "vm", spec.ID, "argv", argv)
	if err := cmd.Start(); err != nil {
		return vmm.State{}, fmt.Errorf("run %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	// Read before the reaper runs: until then the process (even a dead
	// one) keeps its /proc entry.
	start, startErr := proc.StartTime(pid)
	exited := make(chan error, 1)
	go func() {
		// Reaping is all this goroutine does; the daemon finds out that a
		// VM stopped through Alive.
		err := cmd.Wait()
		d.log.Debug("firecracker exited", "vm", spec.ID, "pid", pid, "status", err)
		exited <- err
	}()

	fail := func(err error) (vmm.State, error) {
		select {
		case werr := <-exited:
			exited <- werr
			if errors.Is(err, errExited) {
				err = fmt.Errorf("firecracker exited before its api socket answered (%v)", werr)
			} else {
				err = fmt.Errorf("%w; firecracker has exited (%v)", err, werr)
			}
			if tail := fileTail(outPath, outStart, 2000); tail != "" {
				err = fmt.Errorf("%w; its stderr (%s) ends with:\n%s", err, outPath, tail)
			}
		default:
			if startErr == nil {
				proc.Signal(pid, start, syscall.SIGKILL)
			} else {
				proc.Kill(pid, syscall.SIGKILL) // not reaped: the pid is still ours
			}
			select {
			case <-exited:
			case <-time.After(killWait):
				d.log.Warn("firecracker did not exit after SIGKILL", "vm", spec.ID, "pid", pid)
			}
		}
		return vmm.State{}, errors.Join(err, removeFiles(apiPath, spec.AgentSocket))
	}
	if startErr != nil {
		return fail(fmt.Errorf("firecracker pid %d: %w", pid, startErr))
	}

	client := NewClient(apiPath, apiTimeout)
	info, err := waitAPI(ctx, client, exited)
	if err != nil {
		return fail(err)
	}
	if info.ID != spec.ID {
		return fail(fmt.Errorf("the api socket %s answers with instance id %q, want %q", apiPath, info.ID, spec.ID))
	}
	ready := time.Since(t0)
	for _, r := range ConfigRequests(spec) {
		if err := client.Put(ctx, r.Path, r.Body); err != nil {
			return fail(fmt.Errorf("configure %s: %w", r.What, err))
		}
	}
	socks := []string{apiPath}
	if spec.AgentSocket != "" {
		socks = append(socks, spec.AgentSocket)
	}
	for _, p := range socks {
		// Firecracker creates its sockets under its umask; only the owner
		// gets to drive the VM.
		if err := os.Chmod(p, 0o600); err != nil {
			return fail(fmt.Errorf("restrict %s: %w", p, err))
		}
		if chown {
			if err := os.Chown(p, own.uid, own.gid); err != nil {
				return fail(fmt.Errorf("hand %s to %s: %w", p, own, err))
			}
		}
	}
	var notes []string
	if chown {
		what := "API socket"
		if spec.AgentSocket != "" {
			what = "API and vsock sockets"
		}
		notes = append(notes, fmt.Sprintf("%s, %s chowned to %s", what, strings.Join(chowned, ", "), own))
	}
	if err := client.Put(ctx, "/actions", Action(fcapi.ActionInstanceStart)); err != nil {
		return fail(fmt.Errorf("start the guest: %w", err))
	}
	d.log.Info("firecracker started", "vm", spec.ID, "pid", pid,
		"api_ready", ready.Round(time.Millisecond), "guest_started", time.Since(t0).Round(time.Millisecond))
	return vmm.State{
		Version:       vmm.StateVersion,
		Driver:        d.Name(),
		PID:           pid,
		StartTime:     start,
		ControlSocket: apiPath,
		AgentSocket:   spec.AgentSocket,
		ConsoleLog:    spec.ConsoleLog,
		TAP:           spec.TAP,
		Accel:         "kvm", // Firecracker runs on KVM only
		Argv:          argv,
		VsockCID:      spec.VsockCID,
		Notes:         notes,
	}, nil
}

// errExited is waitAPI's error when the process ended first.
var errExited = errors.New("firecracker exited before its api socket answered")

// waitAPI polls the API socket until GET / answers, the process exits, ctx
// ends or apiReadyTimeout passes.
func waitAPI(ctx context.Context, c *Client, exited chan error) (fcapi.InstanceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, apiReadyTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case err := <-exited:
			exited <- err
			return fcapi.InstanceInfo{}, errExited
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
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fileTail returns up to the last n bytes of the file at p past offset
// from, starting at a line start, or "" when there are none or the file is
// unreadable.
func fileTail(p string, from, n int64) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, from, 0)
	if off >= fi.Size() {
		return ""
	}
	b := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(b, off)
	s := string(b[:k])
	if off > from {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(s)
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
// "<uds>_<port>" listener sockets are removed; cleanup errors are joined.
// A VM that is not running returns nil (after removing leftover sockets).
// When ctx ends early Stop skips the remaining waits and escalates to
// SIGKILL at once.
func (d *Driver) Stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	var errs []error
	if proc.Alive(st.PID, st.StartTime) {
		if err := d.stop(ctx, st, force, timeout); err != nil {
			errs = append(errs, err)
		}
	}
	files := []string{st.ControlSocket, st.AgentSocket}
	listeners, err := vsockListeners(st.AgentSocket)
	if err != nil {
		errs = append(errs, fmt.Errorf("list vsock listener sockets: %w", err))
	}
	if err := removeFiles(append(files, listeners...)...); err != nil {
		errs = append(errs, fmt.Errorf("remove sockets: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop firecracker pid %d: %w", st.PID, err)
	}
	return nil
}

func (d *Driver) stop(ctx context.Context, st vmm.State, force bool, timeout time.Duration) error {
	return proc.Stop(ctx, st.PID, st.StartTime, force, proc.Shutdown{
		Name:     "firecracker",
		Ask:      func(ctx context.Context) error { return d.ctrlAltDel(ctx, st.ControlSocket) },
		Timeout:  timeout,
		TermWait: termWait,
		KillWait: killWait,
		Log:      d.log,
	})
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
// must be "Running". It returns an error wrapping vmm.ErrNotRunning when
// the process is gone (or its pid was reused). A live process whose API
// does not answer, or whose guest is not running (paused, or never
// started), gives an error that does NOT wrap ErrNotRunning: the VMM still
// runs, and Stop can still end it.
func (d *Driver) Recover(ctx context.Context, st vmm.State) error {
	if st.Driver != "" && st.Driver != d.Name() {
		return fmt.Errorf("recover: state belongs to driver %q, not firecracker", st.Driver)
	}
	if !proc.Alive(st.PID, st.StartTime) {
		return fmt.Errorf("recover firecracker pid %d: %w", st.PID, vmm.ErrNotRunning)
	}
	info, err := NewClient(st.ControlSocket, apiTimeout).InstanceInfo(ctx)
	if err != nil {
		return fmt.Errorf("recover firecracker pid %d: process alive but %w", st.PID, err)
	}
	if i := slices.Index(st.Argv, "--id"); i >= 0 && i+1 < len(st.Argv) && info.ID != st.Argv[i+1] {
		return fmt.Errorf("recover firecracker pid %d: %s answers with instance id %q, want %q", st.PID, st.ControlSocket, info.ID, st.Argv[i+1])
	}
	if info.State != fcapi.StateRunning {
		return fmt.Errorf("recover firecracker pid %d: instance state is %q, want %q", st.PID, info.State, fcapi.StateRunning)
	}
	return nil
}
