// Package jailersim is a simulator of Firecracker's jailer (v1.16.1), for
// tests: it runs the Firecracker simulator (fcsim's firecracker-simulator)
// the way the jailer runs Firecracker, so that the daemon's Firecracker
// driver is proven against the jail it would meet on a real host. It is
// NOT the jailer and says so in its --version.
//
// It parses the jailer's arguments with the jailer's parser and rules
// (package fcargs: required --id, --exec-file, --uid, --gid; the id's
// charset and length; --cgroup and --resource-limit formats; the parent
// cgroup's path) and does what the jailer does, in its order, with its
// error messages on stderr and its exit status (1 for any error):
//   - drops every inherited descriptor above stderr (the jailer closes
//     them; the simulator marks them close-on-exec, so that Firecracker
//     inherits none, the same effect) and its whole environment;
//   - creates <chroot-base-dir>/<exec-file name>/<id>/root and copies the
//     exec file into it (O_NOFOLLOW, refusing a hard link), owned by
//     --uid/--gid;
//   - joins --netns, sets the resource limits (no-file 2048 by default);
//   - with --cgroup: finds the hierarchies in /proc/mounts as the jailer
//     does, creates <hierarchy>/<parent>/<id>, enables the controllers
//     up the v2 tree, writes the values (v1: inherited from the parent
//     first) and moves itself in; without, under v2, moves itself into
//     the parent cgroup if it exists;
//   - enters a new mount namespace, pivot_roots into the chroot and drops
//     the old root; creates /, /dev, /dev/net and /run (0700, owned by
//     --uid/--gid), mknods /dev/net/tun, /dev/kvm, /dev/urandom (a warning
//     when it fails) and /dev/userfaultfd (when the host has one), owned
//     by --uid/--gid;
//   - writes /<exec-name>.pid, drops to --uid/--gid with no supplementary
//     groups and execs /<exec-name> --id ID --start-time-us N
//     --start-time-cpu-us N --parent-cpu-time-us N, then the arguments
//     after "--", in place: the pid the caller launched becomes the VMM.
//
// Where it differs, it says so. --daemonize and --new-pid-ns are refused
// (banger does not use them). The environment it hands on is empty but
// for the simulator's own settings (FCSIM_*, see firecracker-simulator)
// and one more: being the simulator of the machine as well, it forks,
// before the jail is built, a launcher that stays outside (host root, no
// cgroup, as --uid/--gid) and hands the simulator one descriptor to it
// ($FCSIM_LAUNCHER_FD): the jailed simulator passes it the descriptors it
// opened inside the jail (kernel, disk, TAP) to start QEMU, which is not
// in the jail (see fcsim.Launcher). The launcher ends, and its QEMU with
// it, when the simulator exits or is killed.
package jailersim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcargs"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/jailer"
)

// Version is the jailer release simulated.
const Version = "1.16.1"

// launcherEnv marks the simulator's own re-execution as the launcher.
const launcherEnv = "JAILERSIM_LAUNCHER"

func init() {
	// The chroot, the network namespace and the exec are this thread's:
	// keep the main goroutine on the main thread (whose id is the pid,
	// which the VMM keeps).
	runtime.LockOSThread()
}

// args are the jailer's (src/jailer/src/main.rs).
var args = []fcargs.Arg{
	{Name: "id", Value: true, Required: true},
	{Name: "exec-file", Value: true, Required: true},
	{Name: "uid", Value: true, Required: true},
	{Name: "gid", Value: true, Required: true},
	{Name: "chroot-base-dir", Value: true, Default: jailer.DefaultChrootBase},
	{Name: "netns", Value: true},
	{Name: "daemonize"},
	{Name: "new-pid-ns"},
	{Name: "cgroup", Multiple: true},
	{Name: "resource-limit", Multiple: true},
	{Name: "cgroup-version", Value: true, Default: "1"},
	{Name: "parent-cgroup", Value: true},
	{Name: "version"},
}

// Main runs the jailer simulator (or, re-executed, its launcher) and
// returns the exit status; when all goes well it does not return: the
// process is the exec file.
func Main() int {
	if os.Getenv(launcherEnv) == "1" {
		return runLauncher()
	}
	start := time.Now()
	cpuStart := cpuTime()
	// The jailer's first act: nothing inherited reaches Firecracker.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		panic(fmt.Sprintf("Failed to sanitize the Jailer process: Failed to call close range syscall: %v", err))
	}
	var keep []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FCSIM_") {
			keep = append(keep, kv)
		}
	}
	os.Clearenv()
	if err := run(os.Args, keep, start, cpuStart); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// env is the jailer's Env: the validated arguments.
type env struct {
	id, execPath, execName, chrootDir string
	uid, gid                          uint32
	netns                             string
	cgroupVersion                     int
	cgroups                           []cgroup
	noFile                            uint64
	fsize                             *uint64
	uffdMinor                         int // -1 without /dev/userfaultfd
	extra                             []string
}

// cgroup is one cgroup the jailer creates, with its settings.
type cgroup struct {
	dir   string
	depth int // of the parent cgroup path (v1's inheritance)
	props [][2]string
}

func run(argv, keepEnv []string, start time.Time, cpuStart time.Duration) error {
	a, err := fcargs.Parse(args, argv[1:])
	if err != nil {
		return fmt.Errorf("Failed to parse arguments: %w", err)
	}
	if a.Help || a.Version {
		fmt.Printf("Jailer simulator (NOT the jailer) v%s\n\n", Version)
		return nil
	}
	e, err := newEnv(a)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e.chrootDir, 0o755); err != nil {
		return fmt.Errorf("Failed to create directory %s: %s", e.chrootDir, fcsim.OSError(err))
	}
	return e.run(keepEnv, start, cpuStart)
}

func newEnv(a *fcargs.Args) (*env, error) {
	e := &env{uffdMinor: -1, noFile: 2048, extra: a.Extra}
	e.id, _ = a.Value("id")
	if err := fcargs.ValidID(e.id); err != nil {
		return nil, fmt.Errorf("Invalid instance ID: %w", err)
	}
	execFile, _ := a.Value("exec-file")
	p, err := canonicalize(execFile)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", p)
	}
	e.execPath, e.execName = p, filepath.Base(p)
	base, _ := a.Value("chroot-base-dir")
	if base, err = canonicalize(base); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", base)
	}
	e.chrootDir = jailer.ChrootDir(base, e.execPath, e.id)
	uid, _ := a.Value("uid")
	u, err := strconv.ParseUint(uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("Invalid uid: %s", uid)
	}
	gid, _ := a.Value("gid")
	g, err := strconv.ParseUint(gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("Invalid gid: %s", gid)
	}
	e.uid, e.gid = uint32(u), uint32(g)
	e.netns, _ = a.Value("netns")
	if a.Flag("daemonize") || a.Flag("new-pid-ns") {
		return nil, errors.New("jailer simulator: --daemonize and --new-pid-ns are not simulated (banger does not use them)")
	}
	parent, ok := a.Value("parent-cgroup")
	if !ok {
		parent = e.execName
	}
	if bad := filepath.IsAbs(parent) || strings.HasPrefix(parent, "./") || parent == "." ||
		slices.Contains(strings.Split(parent, "/"), ".."); bad {
		return nil, errors.New("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")
	}
	ver, _ := a.Value("cgroup-version")
	v, err := strconv.ParseUint(ver, 10, 8)
	if err != nil {
		return nil, fmt.Errorf("%s is an invalid cgroup version specifier", ver)
	}
	e.cgroupVersion = int(v)
	settings := a.Values("cgroup")
	if len(settings) == 0 && v == 2 {
		h, err := hierarchies(2)
		if err != nil {
			return nil, err
		}
		if p := filepath.Join(h.Unified, parent); exists(p) {
			if err := os.WriteFile(filepath.Join(p, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
				return nil, fmt.Errorf("Failed to move process to cgroup (%s): %s.\nHint: If you intended to create a child cgroup under %s, pass any --cgroup parameters.", p, fcsim.OSError(err), p)
			}
		}
	}
	if len(settings) > 0 {
		if e.cgroups, err = cgroups(int(v), settings, e.id, parent); err != nil {
			return nil, err
		}
	}
	for _, rl := range a.Values("resource-limit") {
		name, value, ok := strings.Cut(rl, "=")
		if !ok {
			return nil, fmt.Errorf("Invalid format for resources limits: %s", rl)
		}
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("Invalid limit value for resource: %s: %v", value, err)
		}
		switch name {
		case "fsize":
			e.fsize = &n
		case "no-file":
			e.noFile = n
		default:
			return nil, fmt.Errorf("Invalid resource argument: %s", name)
		}
	}
	e.uffdMinor = miscMinor("userfaultfd")
	return e, nil
}

// hierarchies reads /proc/mounts as the jailer does for version v.
func hierarchies(v int) (jailer.Hierarchies, error) {
	h, err := jailer.ReadHierarchies(jailer.ProcMounts)
	if err != nil {
		return h, fmt.Errorf("Failed to open file %s: %s", jailer.ProcMounts, fcsim.OSError(err))
	}
	if (v == 2 && h.Unified == "") || (v != 2 && len(h.V1) == 0) {
		return h, errors.New("Hierarchy not found: No hierarchy found for this cgroup version.")
	}
	return h, nil
}

// cgroups validates the --cgroup settings and groups them by cgroup
// folder, as CgroupConfigurationBuilder does.
func cgroups(v int, settings []string, id, parent string) ([]cgroup, error) {
	h, err := hierarchies(v)
	if err != nil {
		return nil, err
	}
	if v != 1 && v != 2 {
		return nil, fmt.Errorf("%d is an invalid cgroup version specifier", v)
	}
	avail := h.V2Controllers()
	var out []cgroup
	for _, s := range settings {
		parts := strings.Split(s, "=")
		if len(parts) != 2 || parts[1] == "" {
			return nil, fmt.Errorf("Invalid format for cgroups: %s", s)
		}
		file := parts[0]
		if filepath.IsAbs(file) || strings.HasPrefix(file, "./") || file == "." || slices.Contains(strings.Split(file, "/"), "..") {
			return nil, fmt.Errorf("Cgroup invalid file: %s", s)
		}
		ctrl, err := jailer.Controller(file)
		if err != nil {
			return nil, err
		}
		root := h.Unified
		if v == 1 {
			if root = h.V1Dir(ctrl); root == "" {
				return nil, fmt.Errorf("Controller %s is unavailable", ctrl)
			}
		} else if !avail[ctrl] {
			return nil, fmt.Errorf("Controller %s is unavailable", ctrl)
		}
		dir := filepath.Join(root, parent, id)
		i := slices.IndexFunc(out, func(c cgroup) bool { return c.dir == dir })
		if i < 0 {
			out = append(out, cgroup{dir: dir, depth: len(strings.Split(parent, "/"))})
			i = len(out) - 1
		}
		out[i].props = append(out[i].props, [2]string{file, parts[1]})
	}
	return out, nil
}

func (e *env) run(keepEnv []string, start time.Time, cpuStart time.Duration) error {
	if err := e.copyExec(); err != nil {
		return err
	}
	launcher, err := e.startLauncher()
	if err != nil {
		return err
	}
	if e.netns != "" {
		f, err := os.Open(e.netns)
		if err != nil {
			return fmt.Errorf("Failed to open file %s: %s", e.netns, fcsim.OSError(err))
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			return fmt.Errorf("Failed to join network namespace: netns: %s", fcsim.OSError(err))
		}
	}
	if e.fsize != nil {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: *e.fsize, Max: *e.fsize}); err != nil {
			return errors.New("Failed to set limit for resource: size of file")
		}
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: e.noFile, Max: e.noFile}); err != nil {
		return errors.New("Failed to set limit for resource: number of file descriptors")
	}
	if err := e.setupCgroups(); err != nil {
		return err
	}
	if err := pivot(e.chrootDir); err != nil {
		return err
	}
	for _, dir := range []string{"/", "/dev", "/dev/net", "/run"} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("Failed to create directory %s: %s", dir, fcsim.OSError(err))
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("Failed to change permissions on %s: %s", dir, fcsim.OSError(err))
		}
		if err := os.Chown(dir, int(e.uid), int(e.gid)); err != nil {
			return fmt.Errorf("Failed to change owner for %s: %s", dir, fcsim.OSError(err))
		}
	}
	if err := e.mknod("/dev/net/tun", 10, 200); err != nil {
		return err
	}
	if err := e.mknod("/dev/kvm", 10, 232); err != nil {
		return err
	}
	if err := e.mknod("/dev/urandom", 1, 9); err != nil {
		fmt.Printf("Warning! Could not create /dev/urandom device inside jailer: %v.\n", err)
		fmt.Println("MMDS version 2 will not be available to use.")
	}
	if e.uffdMinor >= 0 {
		if err := e.mknod("/dev/userfaultfd", 10, uint32(e.uffdMinor)); err != nil {
			return err
		}
	}
	exe := "/" + e.execName
	pidFile := jailer.PIDFile(e.execPath)
	f, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("Failed to open file %s: %s", pidFile, fcsim.OSError(err))
	}
	fmt.Fprint(f, os.Getpid())
	f.Close()
	// The launcher's descriptor is the one the simulator inherits.
	if _, err := unix.FcntlInt(launcher.Fd(), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("jailer simulator: hand the launcher on: %w", err)
	}
	env := append(keepEnv, fmt.Sprintf("%s=%d", fcsim.LauncherFDEnv, launcher.Fd()))
	jailerCPU := cpuTime() - cpuStart
	argv := append([]string{exe, "--id", e.id,
		"--start-time-us", strconv.FormatInt(start.UnixMicro(), 10),
		"--start-time-cpu-us", strconv.FormatInt(cpuTime().Microseconds(), 10),
		"--parent-cpu-time-us", strconv.FormatInt(jailerCPU.Microseconds(), 10)}, e.extra...)
	if err := dropPrivileges(e.uid, e.gid); err != nil {
		return fmt.Errorf("Failed to exec into Firecracker: %s", fcsim.OSError(err))
	}
	err = syscall.Exec(exe, argv, env)
	return fmt.Errorf("Failed to exec into Firecracker: %s", fcsim.OSError(err))
}

func dropPrivileges(uid, gid uint32) error {
	if err := syscall.Setgid(int(gid)); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	return syscall.Setuid(int(uid))
}

// copyExec copies the exec file into the chroot as the jailer does:
// created with the source's mode (not truncated), never through a
// symlink, refused when it is a hard link, owned by uid/gid.
func (e *env) copyExec() error {
	src, err := os.Open(e.execPath)
	if err != nil {
		return fmt.Errorf("Failed to open %s: %s", e.execPath, fcsim.OSError(err))
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("Cannot get metadata for a file: %s: %s", e.execPath, fcsim.OSError(err))
	}
	dstPath := filepath.Join(e.chrootDir, e.execName)
	dst, err := os.OpenFile(dstPath, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("Failed to open %s: %s", dstPath, fcsim.OSError(err))
	}
	defer dst.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(dst.Fd()), &st); err != nil {
		return fmt.Errorf("Cannot get metadata for a file: %s: %s", dstPath, fcsim.OSError(err))
	}
	if st.Nlink > 1 {
		return fmt.Errorf("Detected hard link at: %s", dstPath)
	}
	if err := dst.Chown(int(e.uid), int(e.gid)); err != nil {
		return fmt.Errorf("Failed to change owner for %s: %s", dstPath, fcsim.OSError(err))
	}
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("Failed to copy %s to %s: %s", e.execPath, dstPath, fcsim.OSError(err))
	}
	return nil
}

// setupCgroups writes the cgroup values and moves the process in, as
// setup_cgroup_conf does.
func (e *env) setupCgroups() error {
	for _, c := range e.cgroups {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return fmt.Errorf("Failed to create directory %s: %s", c.dir, fcsim.OSError(err))
		}
		enabled := map[string]bool{}
		for _, p := range c.props {
			if e.cgroupVersion == 1 {
				if err := inheritFromParent(c.dir, p[0], c.depth); err != nil {
					return err
				}
			} else if ctrl, _ := jailer.Controller(p[0]); !enabled[ctrl] {
				if err := enableSubtree(filepath.Dir(c.dir), ctrl); err != nil {
					return err
				}
				enabled[ctrl] = true
			}
			if err := writeln(filepath.Join(c.dir, p[0]), p[1]); err != nil {
				return err
			}
		}
	}
	for _, c := range e.cgroups {
		if e.cgroupVersion == 2 {
			if err := writeln(filepath.Join(c.dir, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
				return err
			}
			continue
		}
		// v1's tasks file moves one thread: the jailer has one, the
		// simulator moves each of its own (the exec'ing one last).
		tids, _ := os.ReadDir("/proc/self/task")
		for _, t := range tids {
			if t.Name() != strconv.Itoa(unix.Gettid()) {
				writeln(filepath.Join(c.dir, "tasks"), t.Name())
			}
		}
		if err := writeln(filepath.Join(c.dir, "tasks"), strconv.Itoa(unix.Gettid())); err != nil {
			return err
		}
	}
	return nil
}

func writeln(p, v string) error {
	if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("Failed to write to %s: %s", p, fcsim.OSError(err))
	}
	return nil
}

func readln(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("Failed to read file %s into a string: %s", p, fcsim.OSError(err))
	}
	if len(b) > 0 {
		b = b[:len(b)-1]
	}
	return string(b), nil
}

// inheritFromParent copies a v1 setting from the parent cgroup into dir,
// first into the parent from its own parent when it is empty (up to depth
// levels), as the jailer does.
func inheritFromParent(dir, file string, depth int) error {
	parentFile := filepath.Join(filepath.Dir(dir), file)
	line, err := readln(parentFile)
	if err != nil {
		return err
	}
	if line == "" && depth > 0 {
		inheritFromParent(filepath.Dir(parentFile), file, depth-1)
		if line, err = readln(parentFile); err != nil {
			return err
		}
	}
	if line == "" {
		return fmt.Errorf("Failed to inherit cgroups configurations from file %s in path %s", file, dir)
	}
	return writeln(filepath.Join(dir, file), line)
}

// enableSubtree enables controller in the cgroup.subtree_control of dir
// and of each ancestor that has one, top down.
func enableSubtree(dir, controller string) error {
	f := filepath.Join(dir, "cgroup.subtree_control")
	if !exists(f) {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := enableSubtree(parent, controller); err != nil {
			return err
		}
	}
	return writeln(f, "+"+controller)
}

// pivot makes root this thread's root in a new mount namespace, as the
// jailer's chroot() does.
func pivot(root string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("Failed to unshare into new mount namespace: %s", fcsim.OSError(err))
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("Failed to change the propagation type to slave: %s", fcsim.OSError(err))
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("Failed to bind mount the jail root directory: %s", fcsim.OSError(err))
	}
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("Failed to change current directory: %s", fcsim.OSError(err))
	}
	if err := unix.Mkdir("old_root", 0o600); err != nil {
		return fmt.Errorf("Failed to create the jail root directory before pivoting root: %s", fcsim.OSError(err))
	}
	if err := unix.PivotRoot(".", "old_root"); err != nil {
		return fmt.Errorf("Failed to pivot root: %s", fcsim.OSError(err))
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("Failed to chdir into chroot directory: %s", fcsim.OSError(err))
	}
	if err := unix.Unmount("old_root", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("Failed to unmount the old jail root: %s", fcsim.OSError(err))
	}
	if err := unix.Rmdir("old_root"); err != nil {
		return fmt.Errorf("Failed to remove old jail root directory: %s", fcsim.OSError(err))
	}
	return nil
}

func (e *env) mknod(p string, major, minor uint32) error {
	if err := unix.Mknod(p, unix.S_IFCHR|unix.S_IRUSR|unix.S_IWUSR, int(unix.Mkdev(major, minor))); err != nil {
		return fmt.Errorf("Failed to create %s via mknod inside the jail: %s", p, fcsim.OSError(err))
	}
	if err := os.Chown(p, int(e.uid), int(e.gid)); err != nil {
		return fmt.Errorf("Failed to change owner for %s: %s", p, fcsim.OSError(err))
	}
	return nil
}

// startLauncher starts the launcher outside the jail (this binary again,
// as uid/gid, in a session of its own) and returns the simulator's end of
// its socket.
func (e *env) startLauncher() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("jailer simulator: launcher socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "launcher"), os.NewFile(uintptr(fds[1]), "launcher")
	defer theirs.Close()
	self, err := os.Executable()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("jailer simulator: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{launcherEnv + "=1"}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true,
		Credential: &syscall.Credential{Uid: e.uid, Gid: e.gid, Groups: []uint32{}}}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("jailer simulator: start the launcher: %w", err)
	}
	cmd.Process.Release()
	return ours, nil
}

// runLauncher serves the jailed simulator's launches on descriptor 3.
func runLauncher() int {
	f := os.NewFile(3, "launcher")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "jailer simulator launcher: %v\n", err)
		return 1
	}
	if err := fcsim.ServeLaunches(c.(*net.UnixConn), os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "jailer simulator launcher: %v\n", err)
	}
	return 0
}

// canonicalize is Rust's fs::canonicalize, with the jailer's error.
func canonicalize(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("Failed to canonicalize path %s: %s", p, fcsim.OSError(err))
	}
	return abs, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// miscMinor is the minor number /proc/misc gives name, -1 when none.
func miscMinor(name string) int {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, " ") // as the jailer splits it
		if len(f) >= 2 && f[1] == name {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return -1
}
