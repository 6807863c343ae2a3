// Package bundle locates the runtime bundle: the guest kernel, initramfs and
// modules (and later the VMM binaries and guest agent) that banger needs but
// never keeps in git. Every part of banger asks Resolve; nothing else guesses
// paths.
//
// (Named bundle rather than runtime so it does not shadow the standard
// library's runtime package.)
package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Dir is a resolved runtime bundle directory.
type Dir struct {
	Path string // absolute
	// How says how Path was found, for error messages and `banger doctor`.
	How string
	// Searched lists every place looked at, in order.
	Searched []string
}

// Resolve finds the bundle. Order: $BANGER_RUNTIME_DIR, then configured
// (the config key runtime.dir), then ../lib/banger beside the executable
// (an installed tree), then ../runtime beside the executable (a source
// checkout, whose binaries are in ./bin). The first that exists wins; when
// none does, Resolve returns the first candidate with How explaining, and
// Check reports what is missing.
func Resolve(configured string) Dir {
	exe, err := os.Executable()
	if err != nil {
		exe = ""
	}
	return ResolveFrom(configured, exe)
}

// ResolveFrom is Resolve for the executable at exe (symbolic links are
// followed; "" means unknown), so the installed-tree and source-checkout
// rules can be tested without moving the test binary.
func ResolveFrom(configured, exe string) Dir {
	var cands []Dir
	if v := os.Getenv("BANGER_RUNTIME_DIR"); v != "" {
		cands = append(cands, Dir{Path: v, How: "$BANGER_RUNTIME_DIR"})
	}
	if configured != "" {
		cands = append(cands, Dir{Path: configured, How: "config key runtime.dir"})
	}
	if exe != "" {
		var err error
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			bin := filepath.Dir(exe)
			cands = append(cands,
				Dir{Path: filepath.Join(bin, "..", "lib", "banger"), How: "installed tree (../lib/banger beside the binary)"},
				Dir{Path: filepath.Join(bin, "..", "runtime"), How: "source checkout (./runtime)"})
		}
	}
	var searched []string
	for _, c := range cands {
		c.Path, _ = filepath.Abs(c.Path)
		searched = append(searched, c.Path)
	}
	for i, c := range cands {
		p := searched[i]
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return Dir{Path: p, How: c.How, Searched: searched}
		}
		// An explicit override that does not exist is not silently skipped.
		if c.How == "$BANGER_RUNTIME_DIR" || c.How == "config key runtime.dir" {
			return Dir{Path: p, How: c.How, Searched: searched}
		}
	}
	if len(searched) == 0 {
		return Dir{How: "nowhere (cannot locate the banger executable)"}
	}
	return Dir{Path: searched[len(searched)-1], How: "not found", Searched: searched}
}

// Kernel is the uncompressed guest kernel.
func (d Dir) Kernel() string { return filepath.Join(d.Path, "kernel", "vmlinux") }

// Initrd is the initramfs that loads the virtio modules.
func (d Dir) Initrd() string { return filepath.Join(d.Path, "kernel", "initrd.img") }

// ModulesDir holds lib/modules/<release> to copy into images.
func (d Dir) ModulesDir() string { return filepath.Join(d.Path, "kernel", "modules") }

// Agent is the guest agent binary images install.
func (d Dir) Agent() string { return filepath.Join(d.Path, "agent", "banger-vsock-pingd") }

// KernelRelease returns the guest kernel's release string.
func (d Dir) KernelRelease() (string, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, "kernel", "release"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ErrMissing is wrapped by Check's error.
var ErrMissing = errors.New("runtime bundle incomplete")

// CheckKernel returns an error naming every missing kernel file, where it
// looked and the command that fixes it.
func (d Dir) CheckKernel() error {
	var missing []string
	for _, p := range []string{d.Kernel(), d.Initrd(), filepath.Join(d.Path, "kernel", "release"), d.ModulesDir()} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: missing %s (runtime dir %s, found via %s; searched %s): run `make runtime` in the banger checkout, or set BANGER_RUNTIME_DIR",
		ErrMissing, strings.Join(missing, ", "), d.Path, d.How, strings.Join(d.Searched, ", "))
}

// CheckAgent returns an error when the guest agent images install is
// missing, saying where it looked and how to build it.
func (d Dir) CheckAgent() error {
	if _, err := os.Stat(d.Agent()); err != nil {
		return fmt.Errorf("%w: missing the guest agent %s (runtime dir %s, found via %s): run `make runtime` in the banger checkout",
			ErrMissing, d.Agent(), d.Path, d.How)
	}
	return nil
}
