package vm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/portfwd"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/sshkey"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/units"
	"github.com/bangerhq/banger/internal/vmm"
)

// Resource limits for one VM.
const (
	MinMemoryMiB = 128
	MinDiskBytes = 256 << 20
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// Create validates p, records the VM, makes its disk and, unless p.NoStart,
// boots it and waits until it answers SSH. On any failure nothing is left:
// no row, lease, folder, TAP device or process.
func (s *Service) Create(ctx context.Context, p api.VMCreateParams) (api.VM, error) {
	row, err := s.validateCreate(ctx, &p)
	if err != nil {
		return api.VM{}, err
	}
	steps := s.stepClock(row.Name)
	publish, err := parsePublish(p.Publish)
	if err != nil {
		return api.VM{}, err
	}
	shares, err := s.parseMounts(p.Mounts, s.drivers[row.VMM])
	if err != nil {
		return api.VM{}, err
	}
	if !p.NoStart {
		if err := s.preflightStart(ctx, s.drivers[row.VMM]); err != nil {
			return api.VM{}, err
		}
	}
	img, err := store.GetImage(ctx, s.store.DB, row.ImageID)
	if err != nil {
		return api.VM{}, err
	}
	steps.done("checks")

	unlock := s.lock(row.ID, "")
	defer unlock()

	// Phase 1: the row and the lease, in one transaction. A concurrent create
	// of the same name loses here, before it touches the disk.
	if err := s.insertWithLease(ctx, &row, publish, shares); err != nil {
		return api.VM{}, err
	}
	// undo removes what the failed create made, the row first (as Delete
	// does: a crash in between leaves a folder without a row, which the
	// next daemon start removes), and returns cause with what it could not
	// undo.
	undo := func(cause error) error {
		cleanup := []error{fmt.Errorf("create vm %q: %w", row.Name, cause)}
		if err := store.DeleteVM(context.WithoutCancel(ctx), s.store.DB, row.ID); err != nil {
			cleanup = append(cleanup, err)
		}
		s.dropRemovedImages(ctx)
		s.forget(row.ID)
		s.writeSSHConfig(ctx)
		if err := os.RemoveAll(s.cfg.Dirs.VMDir(row.ID)); err != nil {
			cleanup = append(cleanup, fmt.Errorf("remove vm folder: %w", err))
		}
		s.dropUnusedTemplates()
		return errors.Join(cleanup...)
	}

	// Phase 2: the folder and the disk: a copy of the image, or an
	// overlay (a copy under VMMs without overlays) of the disk of a warm
	// template of the image and the VM's shape.
	var c *clone
	// A VM with shared folders cannot be a clone: its virtio-fs devices
	// cannot be migrated (see template.go).
	if !p.NoStart && !p.Cold && len(shares) == 0 {
		if m, ok := s.findTemplate(shapeOf(row, img)); ok {
			c = &clone{m: m}
		}
	}
	steps.done("row and lease")
	if c != nil {
		progress.Report(ctx, api.Progress{Phase: PhaseDisk,
			Message: fmt.Sprintf("making the disk of a clone of template %s of image %s", c.m.Key[:12], img.Name)})
		var err error
		// A VMM that snapshots by path maps the template's ram file itself.
		if !vmm.SnapshotsByPath(s.drivers[row.VMM]) {
			if c.mem, err = s.templateMemory(ctx, c.m); err != nil {
				return api.VM{}, undo(err)
			}
		}
		steps.done("template memory")
		if c.hostKey, err = s.makeCloneDisk(ctx, row, c.m, steps); err != nil {
			return api.VM{}, undo(err)
		}
	} else {
		progress.Report(ctx, api.Progress{Phase: PhaseDisk,
			Message: fmt.Sprintf("copying image %s into a %s disk", img.Name, units.IEC(row.DiskBytes))})
		if err := s.makeDisk(ctx, row, img); err != nil {
			return api.VM{}, undo(err)
		}
		steps.done("folder and disk")
	}
	row.DesiredState = store.DesiredStopped
	if err := store.UpdateVM(ctx, s.store.DB, &row); err != nil {
		return api.VM{}, undo(err)
	}
	steps.done("record the disk")
	s.log.Info("vm created", "vm", row.Name, "id", row.ID, "ip", row.IP, "image", img.Name)
	s.writeSSHConfig(ctx)
	if p.NoStart {
		return s.viewFull(ctx, row)
	}

	// Phase 3: boot. A VM that cannot boot is removed again: create is all
	// or nothing, and the error carries the console tail.
	if err := s.bootLocked(ctx, &row, c); err != nil {
		return api.VM{}, undo(err)
	}
	unlock()
	v, err := s.viewFull(ctx, row)
	v.BootedFrom = "cold boot"
	if c != nil {
		v.BootedFrom = "template " + c.m.Key[:12]
	}
	return v, err
}

// validateCreate checks p against the host and the store and fills defaults.
// It returns the row to insert (with id, MAC, kernel and image filled).
func (s *Service) validateCreate(ctx context.Context, p *api.VMCreateParams) (store.VM, error) {
	var row store.VM
	if p.Name == "" {
		for i := 0; i < 20; i++ {
			n := MemorableName()
			if _, err := store.GetVM(ctx, s.store.DB, n); isNotFound(err) {
				p.Name = n
				break
			}
		}
	}
	if err := ValidateName(p.Name); err != nil {
		return row, err
	}
	if _, err := store.GetVM(ctx, s.store.DB, p.Name); err == nil {
		return row, api.Errorf(api.ErrExists, "a VM named %q already exists: pick another name or remove it with `banger vm rm %s`", p.Name, p.Name)
	}
	if p.CPUs == 0 {
		p.CPUs = min(s.cfg.DefaultCPUs, runtime.NumCPU())
	}
	if p.CPUs < 1 || p.CPUs > runtime.NumCPU() {
		return row, api.Errorf(api.ErrInvalid, "--cpus %d is out of range: this host has %d CPUs, use 1 to %d", p.CPUs, runtime.NumCPU(), runtime.NumCPU())
	}
	hostMem := hostMemoryMiB()
	if p.MemoryMiB == 0 {
		p.MemoryMiB = s.cfg.DefaultMemoryMiB
	}
	if p.MemoryMiB < MinMemoryMiB || (hostMem > 0 && p.MemoryMiB > hostMem) {
		return row, api.Errorf(api.ErrInvalid, "--memory %d MiB is out of range: use %d to %d MiB (this host has %d MiB)", p.MemoryMiB, MinMemoryMiB, hostMem, hostMem)
	}
	if p.VMM == "" {
		p.VMM = s.cfg.DefaultVMM
	}
	if _, ok := s.drivers[p.VMM]; !ok {
		return row, api.Errorf(api.ErrInvalid, "--vmm %q is not available here: use one of %s", p.VMM, strings.Join(s.driverNames(), ", "))
	}
	if p.Image == "" {
		p.Image = s.cfg.DefaultImage
	}
	img, err := store.GetImage(ctx, s.store.DB, p.Image)
	if err != nil {
		if isNotFound(err) {
			return row, api.Errorf(api.ErrNotFound, "no image named %q: build it with `banger image build %s --from debian:bookworm` (see `banger image ls`)", p.Image, p.Image)
		}
		return row, err
	}
	if _, err := os.Stat(img.Path); err != nil {
		return row, api.Errorf(api.ErrPrecondition, "image %q has no file at %s: rebuild it with `banger image build %s --from %s`", img.Name, img.Path, img.Name, img.Source)
	}
	if p.DiskBytes == 0 {
		p.DiskBytes = max(s.cfg.DefaultDiskBytes, img.SizeBytes)
	}
	if least := max(img.SizeBytes, MinDiskBytes); p.DiskBytes < least {
		why := fmt.Sprintf("is smaller than image %q (%s)", img.Name, units.IEC(img.SizeBytes))
		if img.SizeBytes < MinDiskBytes {
			why = "is below the least a VM disk can be"
		}
		return row, api.Errorf(api.ErrInvalid, "--disk %s %s: use at least %s", units.IEC(p.DiskBytes), why, units.IEC(least))
	}
	if err := s.cfg.Runtime.CheckKernel(); err != nil {
		return row, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	row = store.VM{
		ID: store.NewID(), Name: p.Name, ImageID: img.ID, ImageName: img.Name,
		CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes,
		Kernel: s.cfg.Runtime.Kernel(), Initrd: s.cfg.Runtime.Initrd(),
		VMM: p.VMM, DesiredState: store.DesiredCreating,
	}
	return row, nil
}

func (s *Service) driverNames() []string {
	var out []string
	for n := range s.drivers {
		out = append(out, n)
	}
	return out
}

// insertWithLease inserts row with a fresh MAC and the lowest free IP, and
// its port forwards and shared folders.
func (s *Service) insertWithLease(ctx context.Context, row *store.VM, forwards []portfwd.Spec, shares []mounts.Spec) error {
	return s.store.Tx(ctx, func(tx *sql.Tx) error {
		used, err := store.LeasedAddrs(ctx, tx)
		if err != nil {
			return err
		}
		ip, err := network.AllocateIP(s.cfg.Subnet, used)
		if err != nil {
			return api.Errorf(api.ErrPrecondition, "allocate an address in %s: %w: remove unused VMs or set a larger network.subnet", s.cfg.Subnet, err)
		}
		row.IP = ip.String()
		row.KernelArgs = s.kernelArgs(row.Name, ip)
		if vmm.UsesVsock(s.drivers[row.VMM]) {
			row.VsockCID = vmm.GuestCID
		}
		for attempt := 0; ; attempt++ {
			if row.MAC, err = network.RandomMAC(); err != nil {
				return err
			}
			err = store.InsertVM(ctx, tx, row)
			if err == nil || !errors.Is(err, store.ErrExists) || attempt > 3 {
				break
			}
			// A MAC collision is retried; a name collision is the user's.
			if _, gerr := store.GetVM(ctx, tx, row.Name); gerr == nil {
				break
			}
		}
		if errors.Is(err, store.ErrExists) {
			return api.Errorf(api.ErrExists, "a VM named %q already exists: pick another name or remove it with `banger vm rm %s`", row.Name, row.Name)
		}
		if err != nil {
			return err
		}
		if err := store.InsertLease(ctx, tx, row.IP, row.ID); err != nil {
			return err
		}
		if err := s.insertForwards(ctx, tx, row.ID, forwards); err != nil {
			return err
		}
		return insertMounts(ctx, tx, row.ID, shares)
	})
}

// kernelArgs is the guest kernel command line. The Debian cloud kernel has
// no ip= support, so the guest's banger-net unit reads banger.* itself.
func (s *Service) kernelArgs(name string, ip netip.Addr) string {
	args := []string{"console=ttyS0", "reboot=k", "panic=1", "root=/dev/vda", "rw",
		fmt.Sprintf("banger.ip=%s/%d", ip, s.cfg.Subnet.Bits()),
		"banger.gw=" + network.Gateway(s.cfg.Subnet).String(),
		"banger.hostname=" + name}
	if s.cfg.DNS != "" {
		args = append(args, "banger.dns="+s.cfg.DNS)
	}
	return strings.Join(args, " ")
}

// makeDisk creates the VM folder, clones the image into a disk of the
// requested size, and writes the VM's own SSH host key and the daemon's
// authorized key into it. The host key's public half is pinned in the VM's
// known_hosts file.
func (s *Service) makeDisk(ctx context.Context, row store.VM, img store.Image) error {
	dir := s.cfg.Dirs.VMDir(row.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create vm folder: %w", err)
	}
	if err := image.CloneDisk(ctx, img.Path, s.diskPath(row.ID), row.DiskBytes); err != nil {
		return fmt.Errorf("clone image %q: %w", img.Name, err)
	}
	// The VM's own host key: the guest gets both halves, the host keeps
	// the public one, pinned for this VM's address.
	hostKey, err := sshkey.New("root@" + row.Name)
	if err != nil {
		return fmt.Errorf("make ssh host key: %w", err)
	}
	files := []image.File{
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: hostKey.Private},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Data: []byte(hostKey.PublicLine() + "\n")},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: []byte(s.cfg.SSHPublicKey + "\n")},
		{Path: "/etc/hostname", Mode: 0o644, Data: []byte(row.Name + "\n")},
	}
	if err := image.InjectFiles(ctx, s.diskPath(row.ID), files); err != nil {
		return fmt.Errorf("write ssh keys into the disk: %w", err)
	}
	kh := fmt.Sprintf("%s %s\n", row.IP, hostKey.Key)
	return atomicfile.WriteFile(s.knownHosts(row.ID), []byte(kh), 0o600)
}

// forget drops the in-memory operation record of a deleted VM.
func (s *Service) forget(id string) {
	s.mu.Lock()
	if o := s.ops[id]; o != nil && o.monitor != nil {
		o.monitor()
	}
	delete(s.ops, id)
	s.mu.Unlock()
}
