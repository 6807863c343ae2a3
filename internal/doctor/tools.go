package doctor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/subid"
)

// hostTool is a program banger runs and the Debian package providing it.
type hostTool struct{ name, pkg string }

// checkSSH: `banger vm ssh` runs OpenSSH's client (keys are made in Go).
func checkSSH(_ context.Context, env *Env) Result {
	return checkTools(env, "VM access", []hostTool{{"ssh", "openssh-client"}})
}

// checkShares: shared folders (vm create --mount) need QEMU's virtiofsd;
// a VM without them does not.
func checkShares(_ context.Context, _ *Env) Result {
	if err := mounts.CheckVirtiofsd(); err != nil {
		return Result{Status: StatusWarn, Detail: fmt.Sprintf("no %s: VMs cannot have shared folders (vm create --mount)", mounts.VirtiofsdBinary),
			Fix: "apt-get install qemu-system-common"}
	}
	return Result{Status: StatusOK, Detail: mounts.VirtiofsdBinary}
}

func checkDiskTools(_ context.Context, env *Env) Result {
	// CloneDisk checks and grows each VM's copy of its image; InjectFiles
	// writes its keys and settings into it.
	return checkTools(env, "VM disks", []hostTool{{"e2fsck", "e2fsprogs"}, {"resize2fs", "e2fsprogs"}, {"debugfs", "e2fsprogs"}})
}

func checkImageTools(_ context.Context, env *Env) Result {
	// Builds stream mmdebstrap's output (Debian) or a flattened OCI image
	// into a sandbox that runs mkfs.ext4, debugfs and e2fsck.
	ts := []hostTool{{"mmdebstrap", "mmdebstrap"}, {"mkfs.ext4", "e2fsprogs"}, {"debugfs", "e2fsprogs"}, {"e2fsck", "e2fsprogs"}}
	if env.EUID != 0 {
		// An ordinary user's sandbox ids are mapped with these.
		ts = append(ts, hostTool{"newuidmap", "uidmap"}, hostTool{"newgidmap", "uidmap"})
	}
	r := checkTools(env, "image builds", ts)
	// The build sandbox maps subordinate ids, also for root.
	ids, err := subid.Lookup(env.SubIDs, env.User, env.EUID)
	if err == nil {
		if r.Status == StatusOK {
			r.Detail += fmt.Sprintf("; build sandboxes run as subordinate ids %s (uids) and %s (gids) of %s", ids.UIDs, ids.GIDs, userLabel(env))
		}
		return r
	}
	detail := fmt.Sprintf("image builds run in a sandbox of subordinate ids, and %s has none fit: %v", userLabel(env), err)
	fix := "sudo " + subid.FixCommand(env.User, env.EUID)
	if r.Status == StatusFail {
		r.Detail += "; " + detail
		r.Fix += "\n" + fix
	} else {
		r.Status, r.Detail, r.Fix = StatusFail, detail, fix
	}
	return r
}

// checkTools fails naming every tool not found and the packages to
// install; what says what needs the tools.
func checkTools(env *Env, what string, ts []hostTool) Result {
	var found, missing, pkgs []string
	for _, t := range ts {
		if p, ok := env.lookTool(t.name); ok {
			found = append(found, p)
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (package %s)", t.name, t.pkg))
		if !slices.Contains(pkgs, t.pkg) {
			pkgs = append(pkgs, t.pkg)
		}
	}
	if len(missing) > 0 {
		where := "$PATH"
		if len(env.SbinDirs) > 0 {
			where += ", " + strings.Join(env.SbinDirs, ", ")
		}
		return Result{Status: StatusFail,
			Detail: fmt.Sprintf("missing %s (looked in %s): needed for %s", strings.Join(missing, ", "), where, what),
			Fix:    "sudo apt-get install " + strings.Join(pkgs, " ")}
	}
	return Result{Status: StatusOK, Detail: strings.Join(found, ", ")}
}

func userLabel(env *Env) string { return userLabelOf(env.User, env.EUID) }

func userLabelOf(user string, uid int) string {
	if user == "" {
		return "uid " + strconv.Itoa(uid)
	}
	return user
}
