// Package jailer is what banger knows of Firecracker's jailer (v1.16.1,
// src/jailer and docs/jailer.md): its command line, the chroot it builds
// and the cgroups it creates, found the way the jailer finds them. The
// Firecracker driver uses it to launch and clean up after a jailed
// Firecracker; the jailer simulator (package jailersim) uses the same
// layout and cgroup discovery, so that the two agree by construction on
// what the real jailer would do.
//
// The jailer, run as root, builds <chroot-base>/<exec-file name>/<id>/root,
// copies the exec file into it, creates cgroups
// <hierarchy>/<parent-cgroup>/<id> (the parent defaults to the exec file's
// name) with the --cgroup values, enters a new mount namespace whose root
// is the chroot (pivot_root), makes /dev/kvm and /dev/net/tun there owned
// by --uid/--gid, drops to them and execs the copy in place (same pid) as
// `<exec-name> --id ID --start-time-us N --start-time-cpu-us N
// --parent-cpu-time-us N <args after -->`. Everything Firecracker opens by
// path must be inside the chroot; nothing it inherits survives (the jailer
// closes every descriptor above stderr first). It leaves the chroot and
// the cgroups behind when Firecracker exits: cleaning them is the caller's.
package jailer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// DefaultChrootBase is the jailer's --chroot-base-dir default.
const DefaultChrootBase = "/srv/jailer"

// DefaultBinary is the jailer looked up in $PATH; BundlePath is where a
// runtime bundle keeps it, beside Firecracker.
const (
	DefaultBinary = "jailer"
	BundlePath    = "firecracker/jailer"
)

// ProcMounts is where the jailer reads the cgroup mount points.
const ProcMounts = "/proc/mounts"

// ChrootDir is the chroot the jailer builds for execFile and id under base:
// <base>/<base name of execFile>/<id>/root.
func ChrootDir(base, execFile, id string) string {
	return filepath.Join(base, filepath.Base(execFile), id, "root")
}

// PIDFile is the file, in the chroot, where the jailer writes the pid it
// execs Firecracker as: /<exec-name>.pid.
func PIDFile(execFile string) string { return "/" + filepath.Base(execFile) + ".pid" }

// Options are the jailer arguments banger uses.
type Options struct {
	ID         string
	ExecFile   string
	UID, GID   uint32
	ChrootBase string
	// CgroupVersion is 1 or 2; Cgroups are "<file>=<value>" settings
	// (none: the jailer creates no cgroup).
	CgroupVersion int
	Cgroups       []string
	// NetNS, when set, is a network namespace file the jailer joins.
	NetNS string
}

// Argv is the jailer command line (bin first) for o, with fcArgs passed on
// to Firecracker after "--". The jailer adds --id itself: fcArgs must not
// hold one (Firecracker refuses a repeated argument).
func Argv(bin string, o Options, fcArgs ...string) []string {
	argv := []string{bin, "--id", o.ID, "--exec-file", o.ExecFile,
		"--uid", strconv.FormatUint(uint64(o.UID), 10), "--gid", strconv.FormatUint(uint64(o.GID), 10),
		"--chroot-base-dir", o.ChrootBase, "--cgroup-version", strconv.Itoa(o.CgroupVersion)}
	for _, c := range o.Cgroups {
		argv = append(argv, "--cgroup", c)
	}
	if o.NetNS != "" {
		argv = append(argv, "--netns", o.NetNS)
	}
	return append(append(argv, "--"), fcArgs...)
}

// Hierarchies are the cgroup mount points, found as the jailer finds them
// in /proc/mounts.
type Hierarchies struct {
	// Unified is the cgroup v2 mount point ("" when none is mounted).
	Unified string
	// V1 are the cgroup v1 mount points and their mount options (which
	// name their controllers), in /proc/mounts order.
	V1 []MountPoint
}

// MountPoint is one cgroup v1 mount.
type MountPoint struct{ Dir, Options string }

// mountRE is the jailer's own pattern (cgroup.rs).
var mountRE = regexp.MustCompile(`^([a-z2]*)[[:space:]](?P<dir>.*)[[:space:]]cgroup(?P<ver>2?)[[:space:]](?P<options>.*)[[:space:]]0[[:space:]]0$`)

// ReadHierarchies reads the cgroup mount points from procMounts: the first
// cgroup2 mount, and every cgroup (v1) mount.
func ReadHierarchies(procMounts string) (Hierarchies, error) {
	f, err := os.Open(procMounts)
	if err != nil {
		return Hierarchies{}, err
	}
	defer f.Close()
	var h Hierarchies
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := mountRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		dir, ver, opts := m[mountRE.SubexpIndex("dir")], m[mountRE.SubexpIndex("ver")], m[mountRE.SubexpIndex("options")]
		switch {
		case ver == "2" && h.Unified == "":
			h.Unified = dir
		case ver == "":
			h.V1 = append(h.V1, MountPoint{Dir: dir, Options: opts})
		}
	}
	return h, sc.Err()
}

// V1Dir is the v1 hierarchy that holds controller, "" when none does.
func (h Hierarchies) V1Dir(controller string) string {
	for _, m := range h.V1 {
		for _, o := range strings.Split(m.Options, ",") {
			if o == controller {
				return m.Dir
			}
		}
	}
	return ""
}

// V2Controllers are the controllers the v2 hierarchy offers (its
// cgroup.controllers), nil without one.
func (h Hierarchies) V2Controllers() map[string]bool {
	if h.Unified == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(h.Unified, "cgroup.controllers"))
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, c := range strings.Fields(string(b)) {
		out[c] = true
	}
	return out
}

// Controller is the controller a cgroup file belongs to: the part before
// its first dot ("cpu" of "cpu.max").
func Controller(file string) (string, error) {
	c, _, ok := strings.Cut(file, ".")
	if !ok {
		return "", fmt.Errorf("Cgroup invalid file: %s", file)
	}
	return c, nil
}

// Limits are the cgroup settings that fit a VM of cpus vCPUs and memMiB of
// guest memory, for the cgroup version the host offers the cpu and memory
// controllers in (2 preferred): a CPU quota of cpus whole CPUs, and a
// memory limit of the guest memory plus overhead MiB for the VMM itself.
// version is 0 (and the error says why) when neither offers both: the
// VMM then runs without cgroup limits.
func Limits(h Hierarchies, cpus, memMiB, overheadMiB int) (version int, cgroups []string, err error) {
	const period = 100000 // µs, the kernel's default CFS period
	mem := int64(memMiB+overheadMiB) << 20
	if c := h.V2Controllers(); c["cpu"] && c["memory"] {
		return 2, []string{fmt.Sprintf("cpu.max=%d %d", cpus*period, period), fmt.Sprintf("memory.max=%d", mem)}, nil
	}
	if h.V1Dir("cpu") != "" && h.V1Dir("memory") != "" {
		return 1, []string{fmt.Sprintf("cpu.cfs_quota_us=%d", cpus*period), fmt.Sprintf("memory.limit_in_bytes=%d", mem)}, nil
	}
	return 0, nil, errors.New("neither cgroup v2 nor cgroup v1 offers both the cpu and the memory controller here")
}

// CgroupDirs are the cgroup folders the jailer creates for o (each
// <hierarchy>/<parent>/<id>, the parent being the exec file's name), for
// the caller to remove once Firecracker has exited.
func CgroupDirs(h Hierarchies, o Options) ([]string, error) {
	parent := filepath.Base(o.ExecFile)
	var dirs []string
	seen := map[string]bool{}
	for _, c := range o.Cgroups {
		file, _, _ := strings.Cut(c, "=")
		ctrl, err := Controller(file)
		if err != nil {
			return nil, err
		}
		root := h.Unified
		if o.CgroupVersion == 1 {
			root = h.V1Dir(ctrl)
		}
		if root == "" {
			return nil, fmt.Errorf("Controller %s is unavailable", ctrl)
		}
		d := filepath.Join(root, parent, o.ID)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}
