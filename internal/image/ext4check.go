package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/subid"
)

// ErrBadFileSystem is wrapped by CheckExt4's error when e2fsck finds the
// file system damaged or cannot read it as ext2/3/4 at all.
var ErrBadFileSystem = errors.New("bad ext4 file system")

// CheckExt4 checks the ext4 file system in the image file disk with
// `e2fsck -fn` (forced, read-only: it changes nothing). A file system with
// errors, or a file that is not one, gives an error wrapping
// ErrBadFileSystem with the tail of e2fsck's output; a missing e2fsck one
// wrapping ErrMissingTool.
func CheckExt4(ctx context.Context, disk string) error {
	e2fsck, err := lookTool(toolE2fsck)
	if err != nil {
		return err
	}
	out, err := run(ctx, e2fsck, "-fn", disk)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			// 4: errors left uncorrected (-n never corrects); 8: cannot
			// open or read it as ext2/3/4.
			return fmt.Errorf("%w: e2fsck -fn exit status %d: %s", ErrBadFileSystem, exit.ExitCode(), e2fsckFindings(out, 3))
		}
		return err
	}
	return nil
}

// e2fsckFindings returns the first n lines of e2fsck's output that say
// something about the file system (not the banner, pass headers or the
// closing summary), joined by " | ".
func e2fsckFindings(out []byte, n int) string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "", strings.HasPrefix(l, "e2fsck 1."), strings.HasPrefix(l, "Pass "),
			strings.Contains(l, "files (") && strings.Contains(l, "blocks"):
			continue
		}
		lines = append(lines, l)
		if len(lines) == n {
			break
		}
	}
	if len(lines) == 0 {
		return "no findings printed"
	}
	return strings.Join(lines, " | ")
}

// RootfsInfo is what InspectExt4 found in a root file system image.
type RootfsInfo struct {
	// Present says, for each path asked about, whether the image has it
	// (as anything but a directory).
	Present map[string]bool
	// KernelModules are the names of the directories under /lib/modules
	// and /usr/lib/modules (one per kernel release), sorted, without
	// duplicates (on a merged /usr both paths are the same directory).
	KernelModules []string
}

// InspectExt4 reads the ext4 image disk with debugfs (without mounting or
// writing it) and reports which of paths exist and which kernel module
// trees it holds. Paths must be absolute and free of white space.
func InspectExt4(ctx context.Context, disk string, paths []string) (RootfsInfo, error) {
	info := RootfsInfo{Present: map[string]bool{}}
	debugfs, err := lookTool(toolDebugfs)
	if err != nil {
		return info, err
	}
	for _, p := range paths {
		if err := checkDebugfsPath(p); err != nil {
			return info, err
		}
		out, _, err := runDebugfs(ctx, debugfs, disk, "stat "+p)
		if err != nil {
			return info, err
		}
		info.Present[p] = strings.Contains(out, "Type: ") && !strings.Contains(out, "Type: directory")
	}
	seen := map[string]bool{}
	for _, dir := range []string{"/lib/modules", "/usr/lib/modules"} {
		out, _, err := runDebugfs(ctx, debugfs, disk, "ls -p "+dir)
		if err != nil {
			return info, err
		}
		for _, name := range parseLsDirs(out) {
			if !seen[name] {
				seen[name] = true
				info.KernelModules = append(info.KernelModules, name)
			}
		}
	}
	sort.Strings(info.KernelModules)
	return info, nil
}

// runDebugfs runs one read-only debugfs request against disk, keeping its
// standard output and error apart (debugfs reports a missing path on
// standard error and still exits 0).
func runDebugfs(ctx context.Context, debugfs, disk, request string) (string, string, error) {
	cmd := exec.CommandContext(ctx, debugfs, "-R", request, disk)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := runBound(cmd); err != nil {
		return "", "", commandError(ctx, debugfs, err, stderr.Bytes())
	}
	// debugfs exits 0 even when it cannot open the image.
	if e := stderr.String(); strings.Contains(e, "while trying to open") || strings.Contains(e, "while opening filesystem") {
		return "", e, fmt.Errorf("debugfs cannot open %s: %s", disk, lastLines(stderr.Bytes(), 3))
	}
	return stdout.String(), stderr.String(), nil
}

// parseLsDirs returns the subdirectory names in the output of debugfs's
// `ls -p`, whose lines read /INODE/MODE/UID/GID/NAME/SIZE/.
func parseLsDirs(out string) []string {
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(l), "/")
		if len(f) < 7 || f[0] != "" {
			continue
		}
		mode, name := f[2], f[5]
		if !strings.HasPrefix(mode, "04") || name == "." || name == ".." || name == "" || path.Base(name) != name {
			continue
		}
		names = append(names, name)
	}
	return names
}

func init() {
	sandbox.RegisterJob("image.inspect", inspectJob)
}

// inspectArg and inspectResult cross the sandbox for InspectImported.
type inspectArg struct{ Paths []string }

type inspectResult struct {
	// Bad is e2fsck's finding when the file system is not sound.
	Bad  string
	Info RootfsInfo
}

// sbDisk is where an inspected image is seen in the sandbox.
const sbDisk = "/disk"

func inspectJob(_ *sandbox.Sandbox, raw json.RawMessage) (any, error) {
	var a inspectArg
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := CheckExt4(ctx, sbDisk); err != nil {
		if errors.Is(err, ErrBadFileSystem) {
			return inspectResult{Bad: strings.TrimPrefix(err.Error(), ErrBadFileSystem.Error()+": ")}, nil
		}
		return nil, err
	}
	info, err := InspectExt4(ctx, sbDisk, a.Paths)
	if err != nil {
		return nil, err
	}
	return inspectResult{Info: info}, nil
}

// InspectImported is CheckExt4 and InspectExt4 of an image file someone
// handed to banger (image import), run in a build sandbox: e2fsck and
// debugfs parse a file system that may be crafted against them, so they do
// it without host privilege, seeing nothing of the host but that file
// (read-only). ids are the daemon user's subordinate ids.
func InspectImported(ctx context.Context, ids subid.IDs, disk string, paths []string) (RootfsInfo, error) {
	if _, err := lookTools(toolE2fsck, toolDebugfs); err != nil {
		return RootfsInfo{}, err
	}
	for _, p := range paths {
		if err := checkDebugfsPath(p); err != nil {
			return RootfsInfo{}, err
		}
	}
	var log strings.Builder
	raw, err := sandbox.Run(ctx, sandbox.Spec{IDs: ids, Job: "image.inspect", Arg: inspectArg{Paths: paths},
		Binds: []sandbox.Bind{{Source: disk, At: sbDisk, Give: true}}, Log: &log})
	if err != nil {
		return RootfsInfo{}, fmt.Errorf("inspect %s: %s", disk, strings.ReplaceAll(err.Error(), sbDisk, disk))
	}
	var res inspectResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return RootfsInfo{}, err
	}
	if res.Bad != "" {
		return RootfsInfo{}, fmt.Errorf("%w: %s", ErrBadFileSystem, strings.ReplaceAll(res.Bad, sbDisk, disk))
	}
	return res.Info, nil
}
