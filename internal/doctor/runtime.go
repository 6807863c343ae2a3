package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/strictmodes"
	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// AgentBundlePath is where the runtime bundle keeps the guest agent,
// relative to the bundle directory.
const AgentBundlePath = "agent/banger-vsock-pingd"

// runtimeFix is how a missing or broken runtime bundle is fixed.
const runtimeFix = "run `make runtime` in the banger checkout, or point BANGER_RUNTIME_DIR (or runtime.dir in config.toml) at a runtime bundle"

func checkConfig(_ context.Context, env *Env) Result {
	p := env.Dirs.ConfigFile()
	if env.ConfigErr != nil {
		return Result{Status: StatusFail, Detail: env.ConfigErr.Error(),
			Fix: "edit " + p + ": correct or remove the key named above (every key is optional)"}
	}
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return Result{Status: StatusOK, Detail: "no " + p + ": defaults apply"}
	}
	return Result{Status: StatusOK, Detail: p + " loads"}
}

func checkSocketPath(_ context.Context, env *Env) Result {
	// The daemon's socket, and the longest sockets the drivers put in a
	// VM folder (VM ids are 12 hex digits).
	vmDir := env.Dirs.VMDir("0123456789ab")
	var errs []string
	for _, p := range []string{env.Dirs.Socket(), qemu.AgentSocket(vmDir), firecracker.ListenerSocket(vmDir, math.MaxUint32)} {
		if err := paths.CheckSocketPath(p); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return Result{Status: StatusFail, Detail: strings.Join(errs, "; "),
			Fix: "set XDG_RUNTIME_DIR and XDG_STATE_HOME to shorter directories"}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("socket paths fit the kernel's %d-byte limit (%s, VM sockets under %s)",
		paths.MaxSocketPath, env.Dirs.Socket(), env.Dirs.VMsDir())}
}

// where says which runtime directory was used and how it was found.
func where(env *Env) string {
	return fmt.Sprintf("%s (found via %s)", env.Runtime.Path, env.Runtime.How)
}

func checkRuntime(ctx context.Context, env *Env) Result {
	d := env.Runtime
	if d.Path == "" || d.How == "not found" || !isDir(d.Path) {
		detail := "no runtime bundle found"
		if d.Path != "" && d.How != "not found" {
			detail = fmt.Sprintf("no runtime bundle at %s (set by %s)", d.Path, d.How)
		}
		if len(d.Searched) > 0 {
			detail += "; searched " + strings.Join(d.Searched, ", ")
		}
		return Result{Status: StatusFail, Detail: detail, Fix: runtimeFix}
	}
	var missing []string
	for _, f := range []struct {
		path string
		dir  bool
	}{{d.Kernel(), false}, {d.Initrd(), false}, {filepath.Join(d.Path, "kernel", "release"), false}, {d.ModulesDir(), true}} {
		st, err := os.Stat(f.path)
		if err != nil || st.IsDir() != f.dir {
			missing = append(missing, rel(d.Path, f.path))
		}
	}
	release, relErr := d.KernelRelease()
	if relErr == nil && release == "" {
		missing = append(missing, "kernel/release (empty)")
	}
	if relErr == nil && release != "" && len(missing) == 0 {
		// The modules tree must hold the running kernel's release, or the
		// guest boots without its virtio drivers.
		if m := filepath.Join(d.ModulesDir(), "lib", "modules", release); !isDir(m) {
			missing = append(missing, rel(d.Path, m))
		}
	}
	if len(missing) > 0 {
		return Result{Status: StatusFail,
			Detail: fmt.Sprintf("runtime bundle %s lacks %s", where(env), strings.Join(missing, ", ")),
			Fix:    runtimeFix}
	}
	if env.VerifyRuntime != nil {
		if err := env.VerifyRuntime(ctx, d); err != nil {
			return Result{Status: StatusFail,
				Detail: fmt.Sprintf("runtime bundle %s does not verify: %v", where(env), err),
				Fix:    runtimeFix}
		}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("%s: guest kernel %s", where(env), release)}
}

func checkRuntimeOwner(_ context.Context, env *Env) Result {
	if env.EUID != 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("bangerd runs as uid %d, not root: the bundle and the VMMs it runs have that user's rights only", env.EUID)}
	}
	if !isDir(env.Runtime.Path) {
		return Result{Status: StatusSkip, Detail: "no runtime bundle (see the runtime check)"}
	}
	var probs []strictmodes.Problem
	add := func(err error) {
		var se *strictmodes.Error
		if errors.As(err, &se) {
			probs = append(probs, se.Problems...)
		}
	}
	add(strictmodes.CheckTree("runtime bundle", env.Runtime.Path, env.TrustedUID))
	checked := []string{env.Runtime.Path}
	qemuBin, qemuOK := lookPath(env.qemuBinary(), env.PATH)
	fcBin, fcOK := findFirecracker(env)
	// The jailer runs as root: whoever can change it is root.
	jailerBin, jailerOK := findJailer(env)
	for _, bin := range []struct {
		what, path string
		ok         bool
	}{{"qemu", qemuBin, qemuOK}, {"firecracker", fcBin, fcOK}, {"jailer", jailerBin, jailerOK}} {
		if !bin.ok || strings.HasPrefix(bin.path, env.Runtime.Path+string(filepath.Separator)) {
			continue
		}
		add(strictmodes.Check(bin.what, bin.path, env.TrustedUID))
		checked = append(checked, bin.path)
	}
	if len(probs) > 0 {
		e := &strictmodes.Error{What: "runtime", Problems: probs}
		return Result{Status: StatusFail, Detail: e.Detail(), Fix: e.Fix()}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("only root can change %s (and the folders above)", strings.Join(checked, ", "))}
}

func checkRuntimeAgent(_ context.Context, env *Env) Result {
	if !isDir(env.Runtime.Path) {
		return Result{Status: StatusSkip, Detail: "no runtime bundle (see the runtime check)"}
	}
	p := filepath.Join(env.Runtime.Path, AgentBundlePath)
	st, err := os.Stat(p)
	switch {
	case err != nil:
		return Result{Status: StatusWarn,
			Detail: fmt.Sprintf("%s is missing: new images are built without the guest agent, and banger cannot ping their VMs", p),
			Fix:    "run `make runtime` in the banger checkout (it builds the agent into " + filepath.Dir(p) + ")"}
	case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
		return Result{Status: StatusWarn, Detail: p + " is not an executable file",
			Fix: "run `make runtime` in the banger checkout to rebuild it"}
	}
	return Result{Status: StatusOK, Detail: p}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func rel(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil {
		return r
	}
	return p
}
