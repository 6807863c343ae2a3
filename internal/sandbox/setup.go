package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/subid"
)

const (
	opRun    = "run"
	opRemove = "remove"
	// stagingRoot is where the setup stage builds the sandbox's root (a
	// tmpfs over the host's /tmp, in the setup stage's own mount
	// namespace); the init stage pivot_roots into it.
	stagingRoot = "/tmp"
)

// hostMirror are the host's top-level folders the sandbox sees read-only
// (the programs and libraries of the host tools a job runs), and hostEtc
// the files of /etc those tools read.
var (
	hostMirror = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"}
	hostEtc    = []string{"ld.so.cache", "mke2fs.conf"}
)

// setupConfig is the setup stage's configuration.
type setupConfig struct {
	Op string
	// UID and GID are the daemon's own host ids.
	UID, GID int
	// MapUID and MapGID are what the sandbox's id 0 is in the setup
	// stage's user namespace; OwnUID and OwnGID what the daemon's are.
	MapUID, MapGID uint32
	OwnUID, OwnGID int
	Binds          []Bind
	Init           initConfig
	// Remove is the path opRemove removes.
	Remove string
}

// setupUnmapped is the setup stage of an ordinary user's daemon before its
// id maps exist: it has no capabilities in its new user namespace (they
// were computed at exec, when its uid was unmapped). Once the daemon has
// written the maps ("go"), it executes itself again, now as root there.
func setupUnmapped() error {
	ctl := stageCtl
	if err := armDeathSignal(ctl); err != nil {
		return err
	}
	if line, err := readLine(ctl); err != nil || line != "go" {
		return fmt.Errorf("waiting for the id maps: %q %v", line, err)
	}
	for _, fd := range []int{cfgFD, msgFD} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return err
		}
	}
	return syscall.Exec("/proc/self/exe", append([]string{procName + "-" + stageSetup}, os.Args[1:]...), []string{stageEnv + "=" + stageSetup})
}

// runSetup is the setup stage: it builds the sandbox's root and runs the
// init stage in it (or, for opRemove, removes a path).
func runSetup() error {
	ctl, msgs := stageCtl, &msgWriter{w: stageMsgs}
	if err := armDeathSignal(ctl); err != nil {
		return err
	}
	var cfg setupConfig
	if err := readConfig(ctl, &cfg); err != nil {
		return msgs.done(nil, fmt.Errorf("%w: read the configuration: %w", ErrSetup, err))
	}
	if cfg.Op == opRemove {
		return msgs.done(nil, os.RemoveAll(cfg.Remove))
	}
	given, err := prepareRoot(cfg)
	if err != nil {
		return msgs.done(nil, fmt.Errorf("%w: %w", ErrSetup, err))
	}
	initCfg, err := json.Marshal(cfg.Init)
	if err != nil {
		return msgs.done(nil, err)
	}
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(cfg.MapUID), Size: subid.SandboxSize}}
	gids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(cfg.MapGID), Size: subid.SandboxSize}}
	st := stageCmd{
		name: stageInit,
		flags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET |
			syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		attr: syscall.SysProcAttr{UidMappings: ids, GidMappings: gids, GidMappingsEnableSetgroups: true,
			Credential: &syscall.Credential{Uid: 0, Gid: 0}},
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		env:     []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "LC_ALL=C"},
		msgFile: stageMsgs,
	}
	started := func(cmd *exec.Cmd, cfgW *os.File) error {
		if err := msgs.send(message{PID: cmd.Process.Pid}); err != nil {
			return err
		}
		if _, err := cfgW.Write(append(initCfg, '\n')); err != nil {
			return err
		}
		// The daemon attaches the network, then says "ready".
		if line, err := readLine(ctl); err != nil || line != "ready" {
			return fmt.Errorf("waiting for the network: %q %v", line, err)
		}
		_, err := cfgW.Write([]byte("ready\n"))
		return err
	}
	_, runErr := st.run(context.Background(), started, nil)
	var errs []error
	if runErr != nil {
		var exit *exec.ExitError
		if !errors.As(runErr, &exit) {
			// The init stage did not run: say why (it sent nothing).
			errs = append(errs, runErr)
			msgs.done(nil, fmt.Errorf("%w: %w", ErrSetup, runErr))
		}
	}
	for _, g := range given {
		if err := g(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// prepareRoot mounts the sandbox's root at stagingRoot, in this stage's
// private mount namespace, and returns what gives the given files back.
func prepareRoot(cfg setupConfig) (given []func() error, err error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	// The sources first: the root's tmpfs covers /tmp, where they may be.
	type source struct {
		fd  int
		dir bool
		b   Bind
	}
	var srcs []source
	for _, b := range cfg.Binds {
		fd, err := unix.Open(b.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", b.Source, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", b.Source, err)
		}
		kind := st.Mode & unix.S_IFMT
		if kind != unix.S_IFDIR && kind != unix.S_IFREG {
			return nil, fmt.Errorf("%s is neither a folder nor a regular file", b.Source)
		}
		if b.Give {
			if err := unix.Fchownat(fd, "", int(cfg.MapUID), int(cfg.MapGID), unix.AT_EMPTY_PATH); err != nil {
				return nil, fmt.Errorf("give %s to the sandbox: %w", b.Source, err)
			}
			if kind == unix.S_IFREG {
				src := b.Source
				given = append(given, func() error {
					if err := unix.Fchownat(fd, "", cfg.OwnUID, cfg.OwnGID, unix.AT_EMPTY_PATH); err != nil {
						return fmt.Errorf("take %s back from the sandbox: %w", src, err)
					}
					return nil
				})
			}
		}
		srcs = append(srcs, source{fd: fd, dir: kind == unix.S_IFDIR, b: b})
	}
	if err := unix.Mount("tmpfs", stagingRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return given, fmt.Errorf("mount the sandbox's root: %w", err)
	}
	root, err := unix.Open(stagingRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return given, err
	}
	defer unix.Close(root)
	for _, name := range hostMirror {
		fi, err := os.Lstat("/" + name)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink("/" + name)
			if err != nil {
				return given, err
			}
			if err := unix.Symlinkat(target, root, name); err != nil {
				return given, fmt.Errorf("/%s: %w", name, err)
			}
		case fi.IsDir():
			if err := bindNew(root, name, "/"+name, true); err != nil {
				return given, err
			}
		}
	}
	for _, d := range []string{"etc", "dev", "proc", "tmp"} {
		if err := unix.Mkdirat(root, d, 0o755); err != nil {
			return given, fmt.Errorf("/%s: %w", d, err)
		}
	}
	for _, f := range hostEtc {
		if fi, err := os.Stat("/etc/" + f); err == nil && fi.Mode().IsRegular() {
			if err := bindNew(root, "etc/"+f, "/etc/"+f, false); err != nil {
				return given, err
			}
		}
	}
	dev, err := openBeneath(root, "dev", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return given, err
	}
	err = makeDev(dev, "/dev", false)
	unix.Close(dev)
	if err != nil {
		return given, err
	}
	for _, s := range srcs {
		dir, base := path.Split(s.b.At)
		if err := os.MkdirAll(path.Join(stagingRoot, dir), 0o755); err != nil {
			return given, err
		}
		parent, err := openBeneath(root, "."+path.Clean(dir), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return given, err
		}
		mp, err := mountPoint(parent, base, s.dir)
		unix.Close(parent)
		if err != nil {
			return given, err
		}
		err = bindFD(s.fd, mp, !s.b.Writable, s.b.Source, s.b.At)
		unix.Close(mp)
		if err != nil {
			return given, err
		}
	}
	return given, nil
}

// bindNew makes name under root a mount point shaped like source (a folder
// or a file) and binds source there read-only; dir says which.
func bindNew(root int, name, source string, dir bool) error {
	if dir {
		if err := unix.Mkdirat(root, name, 0o755); err != nil {
			return fmt.Errorf("/%s: %w", name, err)
		}
	}
	mp, err := mountPoint(root, name, dir)
	if err != nil {
		return err
	}
	defer unix.Close(mp)
	return bindAt(source, mp, true, false, "/"+name)
}

// armDeathSignal sets this process's parent-death signal to SIGKILL
// (changing credentials, as the stages do, clears it) and then makes sure
// the parent did not die before: life is a pipe whose write end only the
// parent holds.
func armDeathSignal(life *os.File) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set the parent-death signal: %w", err)
	}
	fds := []unix.PollFd{{Fd: int32(life.Fd()), Events: 0}}
	if n, _ := unix.Poll(fds, 0); n > 0 && fds[0].Revents&unix.POLLHUP != 0 {
		return errors.New("the parent is gone")
	}
	return nil
}
