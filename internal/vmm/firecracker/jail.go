package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/jailer"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// Under the jailer (see WithJailer), Firecracker runs in a chroot of its
// own, <chroot base>/<firecracker's file name>/<VM id>/root, where it
// finds everything by these paths, and creates its sockets and log.
const (
	jailKernel = "/vmlinux"
	jailInitrd = "/initrd"
	jailDisk   = "/rootfs"
	jailAPI    = "/" + APISocketName
)

// jailMemoryOverheadMiB is the memory the jail's cgroup allows the VMM
// beyond its guest's (Firecracker itself needs under 5 MiB, its snapshot
// files' page cache more).
const jailMemoryOverheadMiB = 128

// WithJailer makes d launch Firecracker through Firecracker's jailer
// (bin, of the same release; a jailer simulator when sim), with its
// chroots under chrootBase (created mode 0700 when missing, on the file
// system of the VM folders, so that their files are hard-linked rather
// than bind-mounted). It applies to the VMs that have a VMM user of their
// own (Spec.RunAs, a root daemon's): the jailer runs as root. It returns
// d.
func (d *Driver) WithJailer(bin, chrootBase string, sim bool) *Driver {
	d.jailer, d.chrootBase, d.jailerSim = bin, chrootBase, sim
	return d
}

// FindJailer returns Firecracker's jailer: the runtime bundle's
// <runtimeDir>/firecracker/jailer when it exists, else jailer in $PATH.
// The error wraps exec.ErrNotFound when there is none.
func FindJailer(runtimeDir string) (string, error) {
	if runtimeDir != "" {
		p := filepath.Join(runtimeDir, filepath.FromSlash(jailer.BundlePath))
		if _, err := os.Stat(p); err == nil {
			if err := checkExecutable(p); err != nil {
				return "", fmt.Errorf("the jailer in the runtime bundle: %w", err)
			}
			return p, nil
		}
	}
	p, err := exec.LookPath(jailer.DefaultBinary)
	if err != nil {
		return "", fmt.Errorf("no jailer in the runtime bundle or $PATH: %w", err)
	}
	return p, nil
}

// Sweep removes the jails (chroots and cgroups) of the VMs running does
// not name: left by a daemon killed during a launch, or by a VM removed
// after that (see vmm.Sweeper). A jail whose API socket still answers is
// left alone and named in the error.
func (d *Driver) Sweep(ctx context.Context, running map[string]bool) error {
	if d.jailer == "" {
		return nil
	}
	bin, err := d.Binary()
	if err == nil {
		bin, err = execFile(bin)
	}
	if err != nil {
		return nil // no Firecracker: none of its jails either
	}
	dir := filepath.Dir(filepath.Dir(jailer.ChrootDir(d.chrootBase, bin, "x")))
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	h, _ := jailer.ReadHierarchies(jailer.ProcMounts)
	version, limits, _ := jailer.Limits(h, 1, 1, 0)
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if running[id] || !e.IsDir() {
			continue
		}
		root := jailer.ChrootDir(d.chrootBase, bin, id)
		if _, err := NewClient(root+jailAPI, time.Second).InstanceInfo(ctx); err == nil {
			errs = append(errs, fmt.Errorf("jail %s: a firecracker still answers in it: stop it", root))
			continue
		}
		cgroups, _ := jailer.CgroupDirs(h, jailer.Options{ID: id, ExecFile: bin, CgroupVersion: version, Cgroups: limits})
		d.log.Warn("removing the jail of a vm whose firecracker is gone", "jail", filepath.Dir(root))
		if err := removeJail(root, cgroups); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var _ vmm.Sweeper = (*Driver)(nil)

// EndLaunch kills the jailed Firecracker of VM id that a launch left
// running unrecorded (see vmm.LaunchEnder): the pid the jailer wrote in
// the chroot, when that process's root is the chroot (the file is the VMM
// user's to write: a pid of another process is ignored). Unjailed there is nothing to
// find it by.
func (d *Driver) EndLaunch(ctx context.Context, id string) (int, error) {
	if d.jailer == "" {
		return 0, nil
	}
	bin, err := d.Binary()
	if err == nil {
		bin, err = execFile(bin)
	}
	if err != nil {
		return 0, nil // no Firecracker: none of its jails either
	}
	root := jailer.ChrootDir(d.chrootBase, bin, id)
	// The VMM's user can replace the pid file: no link is followed, no
	// FIFO waited on, no more than a pid's worth read.
	f, err := openMade(filepath.Join(root, jailer.PIDFile(bin)), -1)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the pid of the jail %s: %w", root, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 32))
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("read the pid of the jail %s: %w", root, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, nil
	}
	start, err := proc.StartTime(pid)
	if err != nil {
		return 0, nil // gone
	}
	// Its root is the chroot (by inode: in its own mount namespace the
	// link reads "/").
	mine, err1 := os.Stat(root)
	its, err2 := os.Stat(fmt.Sprintf("/proc/%d/root/", pid))
	if err1 != nil || err2 != nil || !os.SameFile(mine, its) {
		return 0, nil
	}
	if err := proc.Signal(pid, start, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill the firecracker of the jail %s: %w", root, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return 1, proc.WaitExit(wctx, pid, start, 0)
}

var _ vmm.LaunchEnder = (*Driver)(nil)

// DiskAliases is the disk's name in a jail (see vmm.DiskAliaser).
func (d *Driver) DiskAliases() []string {
	if d.jailer == "" {
		return nil
	}
	return []string{jailDisk}
}

var _ vmm.DiskAliaser = (*Driver)(nil)

// Jailer returns the jailer d runs Firecracker through, "" when none.
func (d *Driver) Jailer() string { return d.jailer }

// jailed reports whether d launches spec's VMM through the jailer.
func (d *Driver) jailed(spec vmm.Spec) bool { return d.jailer != "" && spec.RunAs != nil }

// jailView is spec as a jailed Firecracker sees it: its folder is the
// chroot's root, and the kernel, initrd, disk (and a clone's snapshot
// state and memory) are linked there.
func jailView(spec vmm.Spec) vmm.Spec {
	v := spec
	v.Dir = ""
	for _, f := range []struct {
		p    *string
		name string
	}{{&v.Kernel, jailKernel}, {&v.Initrd, jailInitrd}, {&v.Disk, jailDisk}} {
		if *f.p != "" {
			*f.p = f.name
		}
	}
	if v.IncomingState != "" {
		v.IncomingState, v.MemoryFile = jailState, jailMemory
	}
	return v
}

// planJail prepares the jail for spec and returns how to launch into it:
// a leftover jail of the VM is removed (after checking nothing answers on
// its sockets), the chroot is made, the kernel, initrd and disk are linked
// into it (the disk handed to the VMM user, the others readable by it),
// a fresh log made, and the cgroup limits chosen for the host. On error
// nothing of the jail is left.
func (d *Driver) planJail(spec vmm.Spec, bin string) (launchPlan, error) {
	bin, err := execFile(bin)
	if err != nil {
		return launchPlan{}, err
	}
	runAs := *spec.RunAs
	root := jailer.ChrootDir(d.chrootBase, bin, spec.ID)
	p := launchPlan{runAs: runAs, chroot: root, api: root + jailAPI, view: jailView(spec)}
	if spec.Agent {
		p.vsock = root + "/" + VsockSocketName
	}
	if err := checkSpec(spec, p.api, root+"/"+VsockSocketName+"_"+fmt.Sprint(uint32(math.MaxUint32))); err != nil {
		return launchPlan{}, fmt.Errorf("invalid spec: %w", err)
	}
	if err := vmm.ClearStaleSockets("an earlier firecracker of this VM", p.api, p.vsock); err != nil {
		return launchPlan{}, err
	}
	h, err := jailer.ReadHierarchies(jailer.ProcMounts)
	if err != nil {
		return launchPlan{}, fmt.Errorf("find the cgroup hierarchies: %w", err)
	}
	version, limits, limitsErr := jailer.Limits(h, spec.CPUs, spec.MemoryMiB, jailMemoryOverheadMiB)
	if limitsErr != nil {
		d.log.Warn("firecracker runs without cgroup limits", "vm", spec.ID, "why", limitsErr)
		version = 1 // with no --cgroup, the jailer then creates none
	}
	opts := jailer.Options{ID: spec.ID, ExecFile: bin, UID: runAs.UID, GID: runAs.GID,
		ChrootBase: d.chrootBase, CgroupVersion: version, Cgroups: limits}
	if p.cgroups, err = jailer.CgroupDirs(h, opts); err != nil {
		return launchPlan{}, err
	}
	if err := removeJail(root, p.cgroups); err != nil {
		return launchPlan{}, fmt.Errorf("remove the jail of an earlier run: %w", err)
	}
	if err := os.MkdirAll(d.chrootBase, 0o700); err != nil {
		return launchPlan{}, fmt.Errorf("create the jailer's chroot base: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return launchPlan{}, fmt.Errorf("create the jail: %w", err)
	}
	if err := fillJail(spec, root, runAs); err != nil {
		return launchPlan{}, errors.Join(err, removeJail(root, nil))
	}
	p.argv = jailer.Argv(d.jailer, opts, "--api-sock", jailAPI)
	p.undo = func() error { return removeJail(root, p.cgroups) }
	p.notes = []string{fmt.Sprintf("jailed: chroot %s, cgroups %s", root, strings.Join(p.cgroups, ", "))}
	if len(p.cgroups) == 0 {
		p.notes[0] = fmt.Sprintf("jailed: chroot %s, no cgroup limits: %v", root, limitsErr)
	}
	if d.jailerSim {
		p.notes = append(p.notes, jailerSimulatorNote)
	}
	return p, nil
}

// execFile is Firecracker's binary as the jailer names it: the jailer
// canonicalizes --exec-file, and its chroot is named after the real
// file's name (a bundle's firecracker may be a link to
// firecracker-v1.16.1-x86_64).
func execFile(bin string) (string, error) {
	p, err := filepath.Abs(bin)
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	if err != nil {
		return "", fmt.Errorf("firecracker binary: %w", err)
	}
	return p, nil
}

// jailerSimulatorNote is added to the state notes of a VMM the jailer
// simulator launched.
const jailerSimulatorNote = "jailer simulator: this VMM was jailed by a simulator of Firecracker's jailer, NOT the jailer"

// fillJail links spec's files into the jail root and makes the log.
func fillJail(spec vmm.Spec, root string, runAs vmm.Identity) error {
	if spec.Disk != "" {
		if err := os.Chown(spec.Disk, int(runAs.UID), int(runAs.GID)); err != nil {
			return fmt.Errorf("hand %s to %s, which firecracker runs as: %w", spec.Disk, runAs, err)
		}
	}
	links := []struct{ src, dst string }{{spec.Kernel, jailKernel}, {spec.Initrd, jailInitrd}, {spec.Disk, jailDisk}}
	if spec.IncomingState != "" {
		// A clone's snapshot, which Firecracker only reads (the memory
		// mapped privately): shared with the other clones, not handed over.
		links = append(links, struct{ src, dst string }{spec.IncomingState, jailState}, struct{ src, dst string }{spec.MemoryFile, jailMemory})
	}
	for _, f := range links {
		if f.src == "" {
			continue
		}
		if f.src != spec.Disk {
			if err := readableBy(f.src, runAs); err != nil {
				return err
			}
		}
		if err := linkInto(f.src, root+f.dst); err != nil {
			return err
		}
	}
	return rotateLog(root+"/"+LogFileName, runAs)
}

// readableBy checks that id may read p: the kernel and initrd are linked
// into the jail as they are, shared with other VMs, not handed over.
func readableBy(p string, id vmm.Identity) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return err
	}
	if st.Mode&0o004 != 0 || (st.Uid == id.UID && st.Mode&0o400 != 0) || (st.Gid == id.GID && st.Mode&0o040 != 0) {
		return nil
	}
	return fmt.Errorf("%s is not readable by %s, which firecracker runs as in its jail: chmod o+r %s", p, id, p)
}

// linkInto hard-links src to dst, or bind-mounts it there when they are
// on different file systems (removeJail unmounts it).
func linkInto(src, dst string) error {
	err := os.Link(src, dst)
	if err == nil || !errors.Is(err, unix.EXDEV) {
		if err != nil {
			return fmt.Errorf("link %s into the jail: %w", src, err)
		}
		return nil
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("bind %s into the jail: %w", src, err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s into the jail (another file system than the jail's): %w", src, err)
	}
	return nil
}

// removeJail removes a jail: the files bound into root are unmounted, the
// folder <base>/<exec>/<id> above root removed (nothing in it is followed:
// the jailed VMM may have put links there), and the cgroups removed (they
// must be empty: the VMM has exited). Missing parts are no error.
func removeJail(root string, cgroups []string) error {
	var errs []error
	for _, name := range []string{jailKernel, jailInitrd, jailDisk, jailState, jailMemory} {
		if err := unix.Unmount(root+name, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", root+name, err))
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(filepath.Dir(root)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cg := range cgroups {
		if err := unix.Rmdir(cg); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
		}
	}
	return errors.Join(errs...)
}

// keepJailLog moves Firecracker's log out of the jail before it is
// removed: to dir/firecracker.log, the previous one kept as .1.
func keepJailLog(root, dir string) {
	if root == "" || dir == "" {
		return
	}
	dst := filepath.Join(dir, LogFileName)
	if fi, err := os.Lstat(root + "/" + LogFileName); err != nil || !fi.Mode().IsRegular() {
		return
	}
	os.Rename(dst, dst+".1")
	if err := os.Rename(root+"/"+LogFileName, dst); err == nil {
		os.Lchown(dst, 0, 0)
	}
}
