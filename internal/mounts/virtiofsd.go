package mounts

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// VirtiofsdBinary is QEMU's virtiofsd as Debian's qemu-system-common
// installs it. (Debian 12 has no package of the Rust virtiofsd, whose
// --translate-uid would be another way to the ownership described in
// StartVirtiofsd.)
const VirtiofsdBinary = "/usr/lib/qemu/virtiofsd"

// CheckVirtiofsd returns nil when VirtiofsdBinary is installed, else an
// error that says how to install it.
func CheckVirtiofsd() error {
	if _, err := os.Stat(VirtiofsdBinary); err != nil {
		return fmt.Errorf("shared folders need virtiofsd: install it (Debian: apt-get install qemu-system-common): %w", err)
	}
	return nil
}

// Owner is who owns a shared folder on the host: the guest's root is
// this user in the share.
type Owner struct{ UID, GID int }

// FolderOwner returns the owner of the folder dir (following a symlink:
// the user named it), or an error that says what is wrong: not a folder,
// or owned by another user than daemonUID when the daemon is not root
// (an unprivileged daemon can map only its own uid).
func FolderOwner(dir string, daemonUID int) (Owner, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Owner{}, fmt.Errorf("host folder %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return Owner{}, fmt.Errorf("host folder %s is not a folder", dir)
	}
	o := Owner{UID: int(st.Uid), GID: int(st.Gid)}
	if daemonUID != 0 && o.UID != daemonUID {
		return Owner{}, fmt.Errorf("host folder %s belongs to uid %d, and bangerd (uid %d) can share only its own folders: share one of yours", dir, o.UID, daemonUID)
	}
	return o, nil
}

// The re-exec stage that puts virtiofsd into its file system view.
const (
	stageEnv = "BANGER_VIRTIOFSD_STAGE"
	// stageArg0 names the stage's process (ps shows it until the exec).
	stageArg0 = "banger-virtiofsd"
)

// Main runs the virtiofsd stage this process was started as (by
// StartVirtiofsd) and never returns; in any other process it returns at
// once. Call it first thing in bangerd's main and in TestMain of packages
// whose tests start virtiofsd.
//
// The stage runs in the new user and mount namespaces StartVirtiofsd made,
// as the share's owner. It makes every mount private, mounts the share's
// tree (a detached copy of the host folder's mount, descriptor 5, made by
// the daemon: the owner may not be able to reach the folder by its path)
// at shareAt, then executes virtiofsd with its arguments.
func Main() {
	if os.Getenv(stageEnv) == "" {
		return
	}
	os.Unsetenv(stageEnv)
	runtime.LockOSThread()
	unix.Close(exeFD)
	if err := stage(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", stageArg0, err)
		os.Exit(1)
	}
}

// Descriptors of the stage (ExtraFiles start at 3).
const (
	listenFD = 3 // the vhost-user listening socket, for virtiofsd
	exeFD    = 4 // bangerd's binary, which the stage was executed through
	treeFD   = 5 // the share's detached mount
)

// shareAt is where the stage mounts the share in its mount namespace, for
// virtiofsd's source: a folder every system has and anyone may reach.
const shareAt = "/tmp"

// stage is Main's work: args are virtiofsd's argv.
func stage(argv []string) error {
	if len(argv) < 1 {
		return errors.New("usage: VIRTIOFSD ARGS...")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.MoveMount(treeFD, "", unix.AT_FDCWD, shareAt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount the share at %s: %w", shareAt, err)
	}
	unix.Close(treeFD)
	return syscall.Exec(argv[0], argv, os.Environ())
}

// VirtiofsdArgs is virtiofsd's command line for s, serving the vhost-user
// protocol on the listening socket it inherits as descriptor fd:
//   - sandbox=namespace: it pivot_roots into the folder in new mount, PID
//     and network namespaces, with seccomp and a reduced capability set;
//   - cache=auto and no xattr: plain files, as a developer's folder has;
//   - --rlimit-nofile=0: the limit as it is (raising it needs privilege
//     on the host, which the user namespace does not give).
func VirtiofsdArgs(bin, source string, fd int) []string {
	return []string{bin, "--fd=" + strconv.Itoa(fd), "-o", "source=" + source, "-o", "sandbox=namespace",
		"-o", "cache=auto", "-o", "no_xattr", "-o", "no_posix_lock", "-o", "no_flock", "--rlimit-nofile=0"}
}

// StartVirtiofsd starts virtiofsd (bin) for share s, serving on the
// listening Unix socket ln, with its output appended to out. It runs in a
// user namespace that maps uid and gid 0 to owner's, and nothing else:
// virtiofsd's root is the folder's owner, so the files the guest (as
// root) creates belong to that user on the host and virtiofsd can do no
// more on the host than that user can (a guest user other than root cannot
// create files there: its id has no host id). A read-only share is made
// read-only below virtiofsd (see Main).
//
// virtiofsd is not the daemon's child for long: it runs in a session of
// its own and outlives bangerd, as the VM does; it exits when QEMU
// disconnects (the VM stopped). The caller records its pid and start
// time, and kills it when the VM's VMM is gone; this daemon reaps it
// meanwhile (no zombie).
func StartVirtiofsd(bin string, s Spec, owner Owner, ln, out *os.File) (*os.Process, error) {
	// The stage runs as the owner, who may not reach bangerd's folder:
	// it is executed through a descriptor (only the file's own execute
	// permission counts then).
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd: open bangerd's binary: %w", err)
	}
	defer self.Close()
	// A detached copy of the folder's mount, read-only for a read-only
	// share (QEMU 7.2's virtiofsd has no read-only mode: the kernel
	// refuses every write below it instead).
	fd, err := unix.OpenTree(unix.AT_FDCWD, s.HostDir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd: copy the mount of %s: %w", s.HostDir, err)
	}
	tree := os.NewFile(uintptr(fd), "share")
	defer tree.Close()
	if s.ReadOnly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return nil, fmt.Errorf("start virtiofsd: make %s read-only: %w", s.HostDir, err)
		}
	}
	argv := append([]string{stageArg0}, VirtiofsdArgs(bin, shareAt, listenFD)...)
	cmd := &exec.Cmd{
		Path: "/proc/self/fd/" + strconv.Itoa(exeFD), Args: argv,
		Env:    []string{stageEnv + "=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Stdout: out, Stderr: out,
		ExtraFiles: []*os.File{ln, self, tree},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:      true,
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: owner.UID, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: owner.GID, Size: 1}},
			// The child becomes the namespace's root, the owner on the
			// host, with no supplementary groups (a root daemon's include
			// gid 0): setgroups in the namespace, which only a privileged
			// parent may allow. (An unprivileged daemon's child keeps its
			// groups, which are the user's own.)
			GidMappingsEnableSetgroups: os.Getuid() == 0,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: os.Getuid() != 0},
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start virtiofsd for %s: %w", s.HostDir, err)
	}
	go cmd.Wait() // reaped while this daemon runs
	return cmd.Process, nil
}
