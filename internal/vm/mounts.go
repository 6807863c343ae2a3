package vm

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/guestmount"
	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
)

// Shared folders: recorded with the VM (store.Mount), given to the driver
// at every start (vmm.Spec.Shares: QEMU attaches a vhost-user-fs device
// per share, served by a virtiofsd of its own) and mounted by the guest
// agent once it answers (mounts.Op). They are fixed while the VM runs
// (virtio-mmio devices cannot be added to a running microvm), so `vm
// mount` changes a stopped VM only.
//
// Warm templates: a VM with shares cannot be snapshotted (QEMU refuses to
// migrate a vhost-user-fs device), and a clone of a template cannot get
// shares (they need a shared memory backend, a clone maps its template's
// memory privately). So a VM with shared folders is always booted cold.

// parseMounts parses vm create's --mount specs (host folders absolute),
// checks that each host folder is a folder bangerd may share, and that no
// two shares overlap in the guest.
func (s *Service) parseMounts(texts []string, drv vmm.Driver) ([]mounts.Spec, error) {
	var specs []mounts.Spec
	for _, t := range texts {
		sp, err := s.checkMount(t, drv)
		if err != nil {
			return nil, err
		}
		specs = append(specs, sp)
	}
	if err := mounts.CheckSet(specs); err != nil {
		return nil, api.Errorf(api.ErrInvalid, "--mount: %v", err)
	}
	return specs, nil
}

// checkMount parses one share and checks it against the host and drv.
func (s *Service) checkMount(text string, drv vmm.Driver) (mounts.Spec, error) {
	sp, err := mounts.ParseSpec(text, "")
	if err != nil {
		return sp, api.Errorf(api.ErrInvalid, "%v", err)
	}
	if !vmm.SharesFolders(drv) {
		return sp, api.Errorf(api.ErrInvalid, "mount %s: %s has no virtio-fs, so it cannot share folders: use --vmm qemu for a VM with shared folders, or copy files with `banger vm cp`", text, drv.Name())
	}
	if _, err := mounts.FolderOwner(sp.HostDir, os.Getuid()); err != nil {
		return sp, api.Errorf(api.ErrInvalid, "mount %s: %v", text, err)
	}
	if err := mounts.CheckVirtiofsd(); err != nil {
		return sp, api.Errorf(api.ErrPrecondition, "mount %s: %v", text, err)
	}
	return sp, nil
}

// insertMounts records specs for VM id.
func insertMounts(ctx context.Context, q store.Querier, id string, specs []mounts.Spec) error {
	for _, sp := range specs {
		m := store.Mount{VMID: id, HostDir: sp.HostDir, GuestDir: sp.GuestDir, ReadOnly: sp.ReadOnly}
		if err := store.InsertMount(ctx, q, &m); err != nil {
			if errors.Is(err, store.ErrExists) {
				return api.Errorf(api.ErrExists, "the VM has a shared folder at %s already: remove it first (`banger vm mount --rm VM %s`)", sp.GuestDir, sp.GuestDir)
			}
			return err
		}
	}
	return nil
}

// Mount adds (or with p.Remove removes) a shared folder of the stopped VM
// p.Name and returns the VM.
func (s *Service) Mount(ctx context.Context, p api.VMMountParams) (api.VM, error) {
	row, unlock, err := s.getLocked(ctx, p.Name, "")
	defer unlock()
	if err != nil {
		return api.VM{}, err
	}
	if f, _ := s.facts(row); f.ProcessAlive {
		return api.VM{}, api.Errorf(api.ErrPrecondition, "VM %q is running, and a VM's shared folders are fixed while it runs: stop it first (`banger vm stop %s`)", row.Name, row.Name)
	}
	if p.Remove {
		// GUEST_DIR, or a whole spec: its guest folder.
		guest := p.Spec
		if sp, err := mounts.ParseSpec(p.Spec, ""); err == nil {
			guest = sp.GuestDir
		}
		if err := store.DeleteMount(ctx, s.store.DB, row.ID, guest); err != nil {
			if isNotFound(err) {
				return api.VM{}, api.Errorf(api.ErrNotFound, "VM %q has no shared folder at %s: `banger vm mount %s` lists them", row.Name, guest, row.Name)
			}
			return api.VM{}, err
		}
		s.log.Info("shared folder removed", "vm", row.Name, "guest_dir", guest)
		unlock()
		return s.viewFull(ctx, row)
	}
	sp, err := s.checkMount(p.Spec, s.drivers[row.VMM])
	if err != nil {
		return api.VM{}, err
	}
	have, err := store.ListMounts(ctx, s.store.DB, row.ID)
	if err != nil {
		return api.VM{}, err
	}
	all := []mounts.Spec{sp}
	for _, m := range have {
		all = append(all, mounts.Spec{HostDir: m.HostDir, GuestDir: m.GuestDir, ReadOnly: m.ReadOnly})
	}
	if err := mounts.CheckSet(all); err != nil {
		return api.VM{}, api.Errorf(api.ErrInvalid, "VM %q: %v", row.Name, err)
	}
	if err := insertMounts(ctx, s.store.DB, row.ID, []mounts.Spec{sp}); err != nil {
		return api.VM{}, err
	}
	s.log.Info("shared folder added", "vm", row.Name, "mount", sp.String())
	unlock()
	return s.viewFull(ctx, row)
}

// shares returns the VM's shares for vmm.Spec, with each folder's owner as
// it is now.
func (s *Service) shares(ctx context.Context, row store.VM) ([]vmm.Share, error) {
	ms, err := store.ListMounts(ctx, s.store.DB, row.ID)
	if err != nil {
		return nil, err
	}
	if len(ms) > 0 && !vmm.SharesFolders(s.drivers[row.VMM]) {
		return nil, api.Errorf(api.ErrPrecondition, "it has shared folders, which %s cannot give it: remove them (`banger vm mount --rm %s GUEST_DIR`)", row.VMM, row.Name)
	}
	var out []vmm.Share
	for _, m := range ms {
		o, err := mounts.FolderOwner(m.HostDir, os.Getuid())
		if err != nil {
			return nil, api.Errorf(api.ErrPrecondition, "shared folder %s: %v (remove it with `banger vm mount --rm %s %s`)", m.GuestDir, err, row.Name, m.GuestDir)
		}
		out = append(out, vmm.Share{Tag: mounts.Tag(m.Index), HostDir: m.HostDir, ReadOnly: m.ReadOnly, UID: o.UID, GID: o.GID})
	}
	return out, nil
}

// mountShares has the guest agent of the booted VM mount its shares.
func (s *Service) mountShares(ctx context.Context, row store.VM, st vmm.State) error {
	ms, err := store.ListMounts(ctx, s.store.DB, row.ID)
	if err != nil || len(ms) == 0 {
		return err
	}
	for _, m := range ms {
		p := guestmount.Params{Tag: mounts.Tag(m.Index), Path: m.GuestDir, ReadOnly: m.ReadOnly}
		err := s.withSession(ctx, st, func(sess *agent.Session) error { return sess.Call(ctx, guestmount.Op, p, nil) })
		if err != nil {
			return fmt.Errorf("mount the shared folder %s at %s in the guest: %w", m.HostDir, m.GuestDir, err)
		}
	}
	s.log.Info("shared folders mounted", "vm", row.Name, "count", len(ms))
	return nil
}

// mountViews is what users see of a VM's shares.
func mountViews(ms []store.Mount) []api.Mount {
	var out []api.Mount
	for _, m := range ms {
		sp := mounts.Spec{HostDir: m.HostDir, GuestDir: m.GuestDir, ReadOnly: m.ReadOnly}
		out = append(out, api.Mount{Spec: sp.String(), HostDir: m.HostDir, GuestDir: m.GuestDir, ReadOnly: m.ReadOnly})
	}
	return out
}
