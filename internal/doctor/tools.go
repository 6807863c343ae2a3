package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// hostTool is a program banger runs and the Debian package providing it.
type hostTool struct{ name, pkg string }

// subIDRange is the fewest subordinate ids a rootless mmdebstrap needs: a
// whole 16-bit id space for the guest's users and groups.
const subIDRange = 65536

func checkSSH(_ context.Context, env *Env) Result {
	return checkTools(env, "VM access", []hostTool{{"ssh", "openssh-client"}, {"ssh-keygen", "openssh-client"}})
}

func checkDiskTools(_ context.Context, env *Env) Result {
	// CloneDisk checks and grows each VM's copy of its image; InjectFiles
	// writes its keys and settings into it.
	return checkTools(env, "VM disks", []hostTool{{"e2fsck", "e2fsprogs"}, {"resize2fs", "e2fsprogs"}, {"debugfs", "e2fsprogs"}})
}

func checkImageTools(_ context.Context, env *Env) Result {
	ts := []hostTool{{"mmdebstrap", "mmdebstrap"}, {"fakeroot", "fakeroot"}, {"mkfs.ext4", "e2fsprogs"},
		{"debugfs", "e2fsprogs"}, {"tar", "tar"},
		{"unshare", "util-linux"}}
	if env.EUID != 0 {
		// Rootless builds (mmdebstrap --mode=unshare, unshare --map-auto for
		// OCI images) map subordinate ids.
		ts = append(ts, hostTool{"newuidmap", "uidmap"}, hostTool{"newgidmap", "uidmap"})
	}
	r := checkTools(env, "image builds", ts)
	if env.EUID == 0 {
		return r
	}
	var problems []string
	for _, f := range []string{env.SubUID, env.SubGID} {
		if err := hasSubIDs(f, env.User, env.EUID); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) == 0 {
		if r.Status == StatusOK {
			r.Detail += fmt.Sprintf("; subordinate ids for %s in %s and %s", userLabel(env), env.SubUID, env.SubGID)
		}
		return r
	}
	who := env.User
	if who == "" {
		who = "$USER"
	}
	fix := fmt.Sprintf("sudo usermod --add-subuids 100000-%d --add-subgids 100000-%d %s", 100000+subIDRange-1, 100000+subIDRange-1, who)
	detail := strings.Join(problems, "; ") + ": rootless image builds (mmdebstrap, unshare --map-auto) cannot map the image's users"
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

// hasSubIDs reports, as an error, why file grants user (or uid) no
// subordinate range of at least subIDRange ids.
func hasSubIDs(file, user string, uid int) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("no subordinate ids for %s: %w", userLabelOf(user, uid), err)
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || (fields[0] != user && fields[0] != strconv.Itoa(uid)) {
			continue
		}
		if n, err := strconv.Atoi(fields[2]); err == nil && n > best {
			best = n
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	switch {
	case best < 0:
		return fmt.Errorf("%s has no entry for %s", file, userLabelOf(user, uid))
	case best < subIDRange:
		return fmt.Errorf("%s gives %s only %d ids (want %d)", file, userLabelOf(user, uid), best, subIDRange)
	}
	return nil
}

func userLabel(env *Env) string { return userLabelOf(env.User, env.EUID) }

func userLabelOf(user string, uid int) string {
	if user == "" {
		return "uid " + strconv.Itoa(uid)
	}
	return user
}
