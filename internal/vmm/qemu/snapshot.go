package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/bangerhq/banger/internal/vmm"
)

// Warm templates under QEMU (see vmm.Snapshotter): the template's guest
// RAM is a file-backed memory backend (Spec.MemoryFile), so saving the
// VM with the x-ignore-shared capability writes only the device state (a
// few tens of KB, in a few hundredths of a second); a clone maps the same
// RAM privately and loads that state with -incoming defer and
// migrate-incoming. QEMU's seccomp sandbox forbids exec: migration URIs,
// so both directions use fd: with a descriptor: outgoing through QMP
// getfd, incoming through the descriptor Start passes.

var _ vmm.Snapshotter = (*Driver)(nil)

// migrateTimeout bounds a save or a load of device state.
const migrateTimeout = 60 * time.Second

// ignoreShared is the migration capability that leaves shared file-backed
// RAM out of the stream.
var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// SaveState stops the guest of st and writes its device state to f. The
// VM stays paused; the caller stops the VMM.
func (d *Driver) SaveState(ctx context.Context, st vmm.State, f *os.File) error {
	q, err := DialQMP(ctx, st.ControlSocket, qmpTimeout)
	if err != nil {
		return fmt.Errorf("save vm state: %w", err)
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	for _, c := range []struct {
		cmd  string
		args any
	}{{"stop", nil}, {"migrate-set-capabilities", ignoreShared}} {
		if _, err := q.Execute(ctx, c.cmd, c.args); err != nil {
			return fmt.Errorf("save vm state: %w", err)
		}
	}
	if _, err := q.ExecuteFile(ctx, "getfd", map[string]string{"fdname": "state"}, f); err != nil {
		return fmt.Errorf("save vm state: %w", err)
	}
	if _, err := q.Execute(ctx, "migrate", map[string]string{"uri": "fd:state"}); err != nil {
		return fmt.Errorf("save vm state: %w", err)
	}
	if err := waitMigration(ctx, q); err != nil {
		return fmt.Errorf("save vm state: %w", err)
	}
	return nil
}

// loadState loads the device state QEMU inherited as descriptor fd (a VM
// started with -incoming defer) and lets the guest run.
func loadState(ctx context.Context, qmpPath string, fd int) error {
	q, err := DialQMP(ctx, qmpPath, qmpTimeout)
	if err != nil {
		return fmt.Errorf("load vm state: %w", err)
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	if _, err := q.Execute(ctx, "migrate-set-capabilities", ignoreShared); err != nil {
		return fmt.Errorf("load vm state: %w", err)
	}
	if _, err := q.Execute(ctx, "migrate-incoming", map[string]string{"uri": fmt.Sprintf("fd:%d", fd)}); err != nil {
		return fmt.Errorf("load vm state: %w", err)
	}
	if err := waitMigration(ctx, q); err != nil {
		return fmt.Errorf("load vm state: %w", err)
	}
	if _, err := q.Execute(ctx, "cont", nil); err != nil {
		return fmt.Errorf("load vm state: %w", err)
	}
	return nil
}

// waitMigration polls query-migrate until the migration completed; a
// failed or cancelled one is an error with QEMU's reason.
func waitMigration(ctx context.Context, q *QMP) error {
	for {
		raw, err := q.Execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("query-migrate: %w", err)
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", m.Status, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// MachineKey is the SHA-256 of the QEMU binary's content, the kernel's
// and initrd's, and the command line spec launches with its per-VM parts
// (id, name, folder, MAC, TAP, paths, kernel command line, a disk's
// backing) replaced by fixed values.
func (d *Driver) MachineKey(spec vmm.Spec) (string, error) {
	bin, err := d.Binary()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if err := vmm.WriteFileSums(h, bin, spec.Kernel, spec.Initrd); err != nil {
		return "", fmt.Errorf("machine key: %w", err)
	}
	norm := spec
	norm.ID, norm.Name, norm.Dir = "template", "template", "/template"
	norm.Kernel, norm.KernelArgs, norm.ConsoleLog = "/kernel", "", "/console"
	if norm.Initrd != "" {
		norm.Initrd = "/initrd"
	}
	if norm.Disk != "" {
		// A clone's overlay and the template's raw disk are the same
		// virtio-blk device to the guest.
		norm.Disk, norm.DiskBacking = "/disk", ""
	}
	if norm.TAP != "" || norm.DetachedNIC {
		norm.TAP, norm.DetachedNIC, norm.MAC = "", true, "52:54:00:00:00:00"
	}
	norm.MemoryFile, norm.MemoryShared, norm.IncomingState = "/memory", false, ""
	norm.RunAs, norm.VsockCID = nil, 0
	argv, _ := Argv("qemu", norm)
	for _, a := range argv {
		fmt.Fprintf(h, "%q\n", a)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
