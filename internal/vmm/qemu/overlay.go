package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerhq/banger/internal/vmm"
)

var _ vmm.Overlayer = (*Driver)(nil)

// imgBinary is QEMU's disk image tool: the one next to the QEMU binary
// the driver runs when there is one, else qemu-img in $PATH.
func (d *Driver) imgBinary() (string, error) {
	if bin, err := d.Binary(); err == nil {
		p := filepath.Join(filepath.Dir(bin), "qemu-img")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		return "", fmt.Errorf("qemu-img not found in $PATH: install it (Debian: apt-get install qemu-utils): %w", err)
	}
	return p, nil
}

// CreateOverlay makes overlay (mode 0600, which must not exist) a qcow2
// disk of size bytes whose backing file is the raw disk backing, with
// qemu-img, which does not open backing (-u: the size is given). The
// overlay's header names backing for tools such as qemu-img info; Start
// never lets QEMU open that name (see overlayArgs). On failure no overlay
// is left.
func (d *Driver) CreateOverlay(ctx context.Context, overlay, backing string, size int64) error {
	if !filepath.IsAbs(overlay) || !filepath.IsAbs(backing) {
		return fmt.Errorf("create overlay %s of %s: paths must be absolute", overlay, backing)
	}
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("create overlay %s: size %d is not a positive multiple of 512", overlay, size)
	}
	bin, err := d.imgBinary()
	if err != nil {
		return err
	}
	// O_EXCL: a path that exists (a link an earlier run left) is an
	// error, never written through.
	f, err := os.OpenFile(overlay, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	f.Close()
	out, err := exec.CommandContext(ctx, bin, "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw",
		overlay, strconv.FormatInt(size, 10)).CombinedOutput()
	if err != nil {
		os.Remove(overlay)
		return fmt.Errorf("create overlay %s of %s: %s: %w: %s", overlay, backing, filepath.Base(bin), err, strings.TrimSpace(string(out)))
	}
	return nil
}
