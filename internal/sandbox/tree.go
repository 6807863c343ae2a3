package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runTree is the tree stage (Sandbox.InTree): PID 1 of new mount and PID
// namespaces inside the sandbox.
func runTree() error {
	ctl, msgs := stageCtl, &msgWriter{w: stageMsgs}
	if err := armDeathSignal(ctl); err != nil {
		return err
	}
	var cfg treeConfig
	if err := readConfig(ctl, &cfg); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: read the configuration: %w", ErrSetup, err))
	}
	if err := enterTree(cfg); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: enter the tree: %w", ErrSetup, err))
	}
	if err := dropCaps(); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: %w", ErrSetup, err))
	}
	// Not dumpable: the image's programs (same ids, no CAP_SYS_PTRACE)
	// cannot trace this process or open its pipes to the sandbox through
	// /proc/1.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: not dumpable: %w", ErrSetup, err))
	}
	if cfg.Func != "" {
		fn, ok := lookupTreeFunc(cfg.Func)
		if !ok {
			return msgs.done(nil, fmt.Errorf("%w: no tree function %q in this binary", ErrSetup, cfg.Func))
		}
		res, err := fn(cfg.Arg, os.Stdin, os.Stderr)
		return msgs.done(res, err)
	}
	return msgs.done(nil, runAsInit(cfg.Argv, cfg.Env))
}

// enterTree makes cfg.Root this stage's root (with, when cfg.System, the
// /dev, /proc and /run a program expects).
func enterTree(cfg treeConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// A mount of its own, so that pivot_root can make it the root.
	if err := unix.Mount(cfg.Root, cfg.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", cfg.Root, err)
	}
	root, err := unix.Open(cfg.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	if cfg.System {
		if err := mountSystem(root, cfg.Inputs); err != nil {
			return err
		}
	}
	return pivotInto(root)
}

// mountSystem mounts /dev, /proc and /run (with the inputs) in the tree
// root refers to. Every target is opened below root without following a
// symlink; no image program runs yet, so nothing can change them meanwhile.
func mountSystem(root int, inputs []Input) error {
	for _, d := range []string{"dev", "proc", "run"} {
		if err := ensureDir(root, d); err != nil {
			return err
		}
	}
	fd, err := openBeneath(root, "dev", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	err = mountAt("tmpfs", "mode=0755,size=1m", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, fd, "/dev")
	unix.Close(fd)
	if err != nil {
		return err
	}
	dev, err := openBeneath(root, "dev", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	err = makeDev(dev, "/dev", true)
	unix.Close(dev)
	if err != nil {
		return err
	}
	if fd, err = openBeneath(root, "proc", unix.O_PATH|unix.O_DIRECTORY); err != nil {
		return err
	}
	err = mountAt("proc", "", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC, fd, "/proc")
	unix.Close(fd)
	if err != nil {
		return err
	}
	if fd, err = openBeneath(root, "run", unix.O_PATH|unix.O_DIRECTORY); err != nil {
		return err
	}
	err = mountAt("tmpfs", "mode=0755", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, fd, "/run")
	unix.Close(fd)
	if err != nil || len(inputs) == 0 {
		return err
	}
	run, err := openBeneath(root, "run", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(run)
	banger, err := mountPoint(run, "banger", true)
	if err != nil {
		return err
	}
	defer unix.Close(banger)
	for _, in := range inputs {
		if in.Name == "" || strings.ContainsAny(in.Name, "/\x00") || in.Name == "." || in.Name == ".." {
			return fmt.Errorf("input name %q", in.Name)
		}
		fi, err := os.Stat(in.Source)
		if err != nil {
			return err
		}
		mp, err := mountPoint(banger, in.Name, fi.IsDir())
		if err != nil {
			return err
		}
		err = bindAt(in.Source, mp, true, false, "/run/banger/"+in.Name)
		unix.Close(mp)
		if err != nil {
			return err
		}
	}
	return nil
}

// ensureDir makes name (one component) under root a real folder: a
// symlink or any other non-folder there is removed first.
func ensureDir(root int, name string) error {
	fd, err := openBeneath(root, name, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		if err := unix.Unlinkat(root, name, 0); err != nil {
			return fmt.Errorf("/%s is not a folder and cannot be removed: %w", name, err)
		}
	}
	if err := unix.Mkdirat(root, name, 0o755); err != nil {
		return fmt.Errorf("/%s: %w", name, err)
	}
	return nil
}

// keptCaps are the capabilities the programs of a tree run may have (as
// root of the sandbox's user namespace), the set container engines give by
// default: enough for package managers and their scripts (owners, modes,
// setuid, file capabilities, chroot), nothing that mounts, traces, loads or
// configures anything.
var keptCaps = []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER,
	unix.CAP_MKNOD, unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP,
	unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE}

// dropCaps removes every other capability from the bounding set, so no
// program this stage runs can hold one.
func dropCaps() error {
	last := uintptr(unix.CAP_LAST_CAP)
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = uintptr(n)
		}
	}
	keep := map[uintptr]bool{}
	for _, c := range keptCaps {
		keep[c] = true
	}
	for c := uintptr(0); c <= last; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// runAsInit runs argv as this PID namespace's only program: it reaps
// whatever else ends meanwhile, and returns when argv's process exits
// (the namespace, and whatever it left running, ends with this stage).
func runAsInit(argv, env []string) error {
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "/") {
		return fmt.Errorf("program %q: the path must be absolute", argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	ws, err := reapUntil(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("wait for %s: %w", argv[0], err)
	}
	if err := exitError(ws); err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

// reapUntil waits for any child of this process, as the init of a PID
// namespace or a subreaper must (orphans are its children), until pid ends,
// and returns pid's status.
func reapUntil(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, err
		}
		if p == pid {
			return ws, nil
		}
	}
}

// exitError describes how a program ended; nil for exit status 0.
func exitError(ws unix.WaitStatus) error {
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("killed by %s", ws.Signal())
	}
	return fmt.Errorf("ended (%v)", ws)
}
