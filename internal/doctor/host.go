package doctor

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/units"
)

// capNetAdmin is CAP_NET_ADMIN's bit number (linux/capability.h).
const capNetAdmin = 12

func checkTUN(_ context.Context, env *Env) Result {
	missing, perm, err := openDevice(env.DevTUN)
	switch {
	case err == nil:
		return Result{Status: StatusOK, Detail: env.DevTUN + " opens read-write"}
	case missing:
		return Result{Status: StatusFail, Detail: err.Error() + ": VMs cannot get a network device",
			Fix: "sudo modprobe tun"}
	case perm:
		return Result{Status: StatusFail, Detail: err.Error() + ": the VMM cannot attach its TAP device",
			Fix: "sudo chmod 0666 " + env.DevTUN + " (its usual mode)"}
	}
	return Result{Status: StatusFail, Detail: err.Error(), Fix: "sudo modprobe tun"}
}

// checkNetAdmin decides whether the daemon can create bridges, TAP devices
// and NAT rules. The CLI judges the daemon it would start: root, or a
// bangerd binary with the file capability. Inside the daemon, its own
// effective set decides.
func checkNetAdmin(_ context.Context, env *Env) Result {
	eff, amb, err := readCaps(env.ProcStatus)
	if err != nil {
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("cannot read capabilities: %v", err),
			Fix: "run bangerd as root, or `sudo setcap cap_net_admin+ep $(command -v bangerd)`"}
	}
	has := func(set uint64) bool { return set&(1<<capNetAdmin) != 0 }
	setcap := "sudo setcap cap_net_admin+ep $(command -v bangerd)"
	if env.Bangerd != "" {
		setcap = "sudo setcap cap_net_admin+ep " + env.Bangerd
	}
	switch {
	case env.InDaemon && has(eff):
		return Result{Status: StatusOK, Detail: "bangerd has CAP_NET_ADMIN"}
	case env.InDaemon:
		fix := setcap + ", then `banger daemon restart`"
		if fc, err := fileCaps(env.Bangerd); err == nil && fc.netAdmin() {
			fix = "`banger daemon restart` (the binary has the capability; this process started without it, e.g. before setcap or under no_new_privs)"
		}
		return Result{Status: StatusFail,
			Detail: "bangerd lacks CAP_NET_ADMIN: it cannot create the bridge, TAP devices or NAT rules",
			Fix:    fix + "; or run bangerd as root"}
	case env.EUID == 0 && has(eff):
		return Result{Status: StatusOK, Detail: "running as root (with CAP_NET_ADMIN): bangerd will be too"}
	case env.EUID == 0:
		return Result{Status: StatusFail,
			Detail: "running as root, but CAP_NET_ADMIN is not in the effective set (a container without it?): bangerd cannot create network devices",
			Fix:    "give the container CAP_NET_ADMIN (docker/podman run --cap-add NET_ADMIN)"}
	case has(amb):
		return Result{Status: StatusOK, Detail: "CAP_NET_ADMIN is in this process's ambient set: a bangerd it starts inherits it"}
	case env.Bangerd == "":
		return Result{Status: StatusFail,
			Detail: "not root, and bangerd was not found (beside banger or in $PATH) to check its file capabilities",
			Fix:    "install bangerd (`make build`), then " + setcap}
	}
	fc, err := fileCaps(env.Bangerd)
	switch {
	case err != nil:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("not root, and %v", err), Fix: setcap}
	case fc.netAdmin():
		return Result{Status: StatusOK, Detail: fmt.Sprintf("%s has file capability cap_net_admin+ep", env.Bangerd)}
	}
	return Result{Status: StatusFail,
		Detail: fmt.Sprintf("not root, and %s lacks the cap_net_admin+ep file capability: bangerd cannot create the bridge, TAP devices or NAT rules", env.Bangerd),
		Fix:    setcap + " (once per build), or run banger as root"}
}

// readCaps returns the effective and ambient capability sets from a
// /proc/PID/status file.
func readCaps(status string) (eff, amb uint64, err error) {
	f, err := os.Open(status)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "CapEff":
			dst, found = &eff, true
		case "CapAmb":
			dst = &amb
		default:
			continue
		}
		if *dst, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %s: %w", status, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", status, err)
	}
	if !found {
		return 0, 0, fmt.Errorf("%s has no CapEff line", status)
	}
	return eff, amb, nil
}

// fileCapSet is a file's security.capability attribute.
type fileCapSet struct {
	permitted uint64
	effective bool // the effective flag: permitted caps are raised at exec
}

func (c fileCapSet) netAdmin() bool { return c.effective && c.permitted&(1<<capNetAdmin) != 0 }

// fileCaps reads path's file capabilities (what getcap shows). A file
// without any is the zero set, not an error.
func fileCaps(path string) (fileCapSet, error) {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(path, "security.capability", buf)
	if errors.Is(err, unix.ENODATA) {
		return fileCapSet{}, nil
	}
	if err != nil {
		return fileCapSet{}, fmt.Errorf("read file capabilities of %s: %w", path, err)
	}
	return parseFileCaps(buf[:n])
}

// parseFileCaps decodes struct vfs_cap_data (linux/capability.h), revision
// 1, 2 or 3, little-endian.
func parseFileCaps(b []byte) (fileCapSet, error) {
	const (
		revMask   = 0xFF000000
		rev1      = 0x01000000
		rev2      = 0x02000000
		rev3      = 0x03000000
		flagEffec = 0x000001
	)
	if len(b) < 4 {
		return fileCapSet{}, fmt.Errorf("security.capability: %d bytes", len(b))
	}
	magic := binary.LittleEndian.Uint32(b)
	var c fileCapSet
	c.effective = magic&flagEffec != 0
	switch magic & revMask {
	case rev1:
		if len(b) < 12 {
			return fileCapSet{}, fmt.Errorf("security.capability v1: %d bytes", len(b))
		}
		c.permitted = uint64(binary.LittleEndian.Uint32(b[4:]))
	case rev2, rev3:
		if len(b) < 20 {
			return fileCapSet{}, fmt.Errorf("security.capability v%d: %d bytes", magic>>24, len(b))
		}
		c.permitted = uint64(binary.LittleEndian.Uint32(b[4:])) | uint64(binary.LittleEndian.Uint32(b[12:]))<<32
	default:
		return fileCapSet{}, fmt.Errorf("security.capability: unknown revision %#x", magic&revMask)
	}
	return c, nil
}

func checkVsock(_ context.Context, env *Env) Result {
	why := "Firecracker implements vsock itself over Unix sockets, and banger's QEMU driver reaches the guest agent over a virtio-serial port"
	if _, err := os.Stat(env.DevVhostVsock); err != nil {
		return Result{Status: StatusOK, Detail: env.DevVhostVsock + " absent, and banger needs none: " + why}
	}
	return Result{Status: StatusOK, Detail: env.DevVhostVsock + " present; banger does not use it: " + why}
}

func checkDiskSpace(_ context.Context, env *Env) Result {
	type fsys struct {
		dirs  []string
		avail uint64
	}
	var order []unix.Fsid
	found := map[unix.Fsid]*fsys{}
	var errs []string
	for _, d := range []string{env.Dirs.State, env.Dirs.Data} {
		p := existingAncestor(d)
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			errs = append(errs, fmt.Sprintf("statfs %s: %v", p, err))
			continue
		}
		if f, ok := found[st.Fsid]; ok {
			f.dirs = append(f.dirs, d)
			continue
		}
		order = append(order, st.Fsid)
		found[st.Fsid] = &fsys{dirs: []string{d}, avail: st.Bavail * uint64(st.Bsize)}
	}
	if len(errs) > 0 {
		return Result{Status: StatusWarn, Detail: strings.Join(errs, "; "),
			Fix: "check that XDG_STATE_HOME and XDG_DATA_HOME point at usable directories"}
	}
	r := Result{Status: StatusOK}
	var parts []string
	for _, id := range order {
		f := found[id]
		parts = append(parts, fmt.Sprintf("%s free for %s", units.IEC(int64(f.avail)), strings.Join(f.dirs, " and ")))
		switch {
		case f.avail < env.DiskFailBytes:
			r.Status = StatusFail
		case f.avail < env.DiskWarnBytes && r.Status != StatusFail:
			r.Status = StatusWarn
		}
	}
	r.Detail = strings.Join(parts, "; ")
	switch r.Status {
	case StatusFail:
		r.Detail += fmt.Sprintf(" (under %s: image builds and new VM disks will fail)", units.IEC(int64(env.DiskFailBytes)))
	case StatusWarn:
		r.Detail += fmt.Sprintf(" (under %s: an image build needs about 1-2 GiB, each VM disk up to its size)", units.IEC(int64(env.DiskWarnBytes)))
	}
	if r.Status != StatusOK {
		r.Fix = "free space there (`banger vm rm` and `banger image rm` what you no longer need), or set XDG_STATE_HOME and XDG_DATA_HOME to a larger filesystem"
	}
	return r
}

// existingAncestor returns p, or its nearest ancestor that exists: banger's
// directories are created on first use, and their filesystem is what counts.
func existingAncestor(p string) string {
	for {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

// checkGuestClock says whether TCG guests can keep the TSC as their clock
// source: QEMU gives them tsc=reliable only when the host's TSC runs at a
// constant rate and does not stop in deep C-states (package qemu, tsc.go).
func checkGuestClock(_ context.Context, env *Env) Result {
	b, err := os.ReadFile(env.CPUInfo)
	if err != nil {
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("cannot read the CPU flags: %v", err)}
	}
	flags := map[string]bool{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	if !flags["tsc"] {
		return Result{Status: StatusOK, Detail: "no TSC on this CPU: guests use their architecture's clock; banger keeps guest clocks in step with the host's"}
	}
	var missing []string
	for _, f := range []string{"constant_tsc", "nonstop_tsc"} {
		if !flags[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return Result{Status: StatusOK, Detail: "the host's TSC is constant and nonstop: TCG guests keep it as their clock source (tsc=reliable)"}
	}
	return Result{Status: StatusWarn,
		Detail: "the host's TSC lacks " + strings.Join(missing, " and ") + ": TCG guests fall back to jiffies, which drift on a busy host; banger corrects guest clocks every 10 s, so they stay within about a second",
		Fix:    "nothing to do; with KVM guests use kvm-clock instead"}
}
