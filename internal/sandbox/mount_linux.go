package sandbox

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount helpers. Targets inside an untrusted tree are always given as file
// descriptors opened with openBeneath, never as paths: a symlink the image
// put there cannot redirect a mount. Paths are used only for places the
// sandbox itself made (its tmpfs root) or the host side named.

// openBeneath opens name (one or more components) below dirfd without
// following any symlink and without leaving dirfd; flags are added to
// O_CLOEXEC|O_NOFOLLOW.
func openBeneath(dirfd int, name string, flags int) (int, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat2", Path: name, Err: err}
	}
	return fd, nil
}

// mountAt mounts a new file system of fstype, with options ("key=value" or
// "flag", comma-separated) and mount attributes (unix.MOUNT_ATTR_*), on the
// directory fd refers to. It resolves no path: it works before and after
// pivot_root alike.
func mountAt(fstype, options string, attrs int, fd int, what string) error {
	fs, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("mount %s on %s: fsopen: %w", fstype, what, err)
	}
	defer unix.Close(fs)
	for _, o := range strings.Split(options, ",") {
		if o == "" {
			continue
		}
		if k, v, ok := strings.Cut(o, "="); ok {
			err = unix.FsconfigSetString(fs, k, v)
		} else {
			err = unix.FsconfigSetFlag(fs, o)
		}
		if err != nil {
			return fmt.Errorf("mount %s on %s: option %s: %w", fstype, what, o, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, what, err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return fmt.Errorf("mount %s on %s: fsmount: %w", fstype, what, err)
	}
	defer unix.Close(m)
	if err := unix.MoveMount(m, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount %s on %s: move_mount: %w", fstype, what, err)
	}
	return nil
}

// bindAt bind-mounts the file or folder at source (a path the sandbox
// trusts) onto the mount point fd refers to; read-only when ro. The bind
// is nosuid and nodev unless dev: device nodes bound from the host keep
// working only without nodev.
func bindAt(source string, fd int, ro, dev bool, what string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("bind %s on %s: open_tree: %w", source, what, err)
	}
	defer unix.Close(tree)
	return attach(tree, fd, ro, dev, source, what)
}

// bindFD is bindAt for a source given as a file descriptor (opened in this
// mount namespace).
func bindFD(src, fd int, ro bool, source, what string) error {
	tree, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("bind %s on %s: open_tree: %w", source, what, err)
	}
	defer unix.Close(tree)
	return attach(tree, fd, ro, false, source, what)
}

func attach(tree, fd int, ro, dev bool, source, what string) error {
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID}
	if !dev {
		attr.Attr_set |= unix.MOUNT_ATTR_NODEV
	}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("bind %s on %s: mount_setattr: %w", source, what, err)
	}
	if err := unix.MoveMount(tree, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind %s on %s: move_mount: %w", source, what, err)
	}
	return nil
}

// mountPoint creates name under dirfd as an empty directory (dir) or file,
// owned by whoever runs this, and returns an O_PATH descriptor of it.
func mountPoint(dirfd int, name string, dir bool) (int, error) {
	if dir {
		if err := unix.Mkdirat(dirfd, name, 0o755); err != nil && err != unix.EEXIST {
			return -1, &os.PathError{Op: "mkdir", Path: name, Err: err}
		}
		return openBeneath(dirfd, name, unix.O_PATH|unix.O_DIRECTORY)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return -1, &os.PathError{Op: "create", Path: name, Err: err}
	}
	unix.Close(fd)
	return openBeneath(dirfd, name, unix.O_PATH)
}

// pivotInto makes the directory fd refers to (which must be the root of a
// mount) the root of this mount namespace and detaches the old root, so
// nothing outside it can be reached any more.
func pivotInto(fd int) error {
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("pivot_root: chdir: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// unmount then takes it away (as runc does).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("pivot_root: detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// devNodes are the host device nodes a sandbox's /dev holds, bound from the
// host (a user namespace cannot create device nodes).
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// makeDev fills the empty tmpfs that devfd refers to with devNodes (bound
// from srcDev, a folder holding them), a devpts instance of its own with
// ptmx, /dev/shm and the usual links. It is a /dev with no other device.
func makeDev(devfd int, srcDev string, pts bool) error {
	for _, n := range devNodes {
		fd, err := mountPoint(devfd, n, false)
		if err != nil {
			return err
		}
		err = bindAt(srcDev+"/"+n, fd, false, true, "/dev/"+n)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	if pts {
		fd, err := mountPoint(devfd, "pts", true)
		if err != nil {
			return err
		}
		err = mountAt("devpts", "newinstance,ptmxmode=0666,mode=0620", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, fd, "/dev/pts")
		unix.Close(fd)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat("pts/ptmx", devfd, "ptmx"); err != nil {
			return fmt.Errorf("/dev/ptmx: %w", err)
		}
		fd, err = mountPoint(devfd, "shm", true)
		if err != nil {
			return err
		}
		err = mountAt("tmpfs", "mode=1777", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, fd, "/dev/shm")
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlinkat(target, devfd, name); err != nil {
			return fmt.Errorf("/dev/%s: %w", name, err)
		}
	}
	return nil
}
