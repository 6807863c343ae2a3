package vm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/guestid"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/sshkey"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/units"
	"github.com/bangerhq/banger/internal/vmm"
)

// Warm templates: a guest of an image booted once, quiesced by its agent
// (boot finished, synced, random seed dropped; see package guestid)
// and saved (vmm.Snapshotter), so that vm create can start a clone of it
// in well under a second instead of booting a kernel.
//
// A template lives in TemplatesDir()/KEY/: ram (the guest RAM, sparse),
// state (the VMM's device state), disk.ext4 (its disk as it was saved) and
// template.json (its manifest). KEY is a digest of everything the saved
// state depends on (the image, the disk size, the VMM's MachineKey: VMM
// build, accelerator, CPU model, CPUs, memory, kernel, device command
// line), so a template whose inputs changed is never found, hence never
// loaded: vm create boots cold, and image warm builds a new one. A
// template is built under TemplatesDir()/.build-ID and renamed into place
// when complete; the next daemon start removes what a killed daemon left
// (its VMM included).
//
// Its files are the daemon's and never written after the build. Under
// QEMU they are mode 0400 and no VMM opens them: a clone's RAM is a sealed
// memfd (no write, grow or shrink; the daemon copies ram into it once per
// daemon run) that every clone maps privately, copy on write, through
// /proc/self/fd; QEMU 7.2 opens its memory file read-write even for a
// private mapping, and a seal is what makes that harmless: a clone that
// escapes its VMM cannot change the RAM the other clones start from. A
// VMM that opens a clone's state and RAM by path from its jail
// (vmm.SnapshotFiler: Firecracker) gets ram and state themselves, mode
// 0444, readable by the VMM users and writable by none. Under a VMM that is a
// vmm.Overlayer (QEMU) the clone's disk is a qcow2 overlay of disk.ext4
// (made in a few milliseconds, where a copy took 0.3-0.5 s here), which
// its VMM opens read-only; the VM folder's "template" file (the daemon's,
// never the VMM's) names the template whose disk it is, for every later
// start. A template's disk therefore lives as long as a clone of it: image
// rm removes the rest of the template at once and its disk with the last
// clone (retired templates: a folder holding disk.ext4 only). Under other
// VMMs (Firecracker takes raw disks only) the clone's disk is a copy
// (reflink where the file system has it, else sparse) of disk.ext4.
//
// A clone then gets its own identity from the agent (package guestid)
// before it counts as ready: RNG reseed, machine-id, hostname, SSH
// host key, MAC and address of its own lease, then its clock is set. Its
// row is an ordinary VM's: vm restart boots it cold from its own disk.

// Template file names.
const (
	tplManifest = "template.json"
	tplRAM      = "ram"
	tplState    = "state"
	tplDisk     = "disk.ext4"
	tplVMM      = "vmm.json" // a build's VMM state, for the sweep
	// cloneMarker, in a VM folder, names the template whose disk backs
	// the VM's overlay disk (overlayName).
	cloneMarker = "template"
	overlayName = "disk.qcow2"
)

// templateManifest is template.json.
type templateManifest struct {
	Key          string    `json:"key"`
	ImageID      string    `json:"image_id"`
	ImageName    string    `json:"image_name"`
	VMM          string    `json:"vmm"`
	Accel        string    `json:"accel"`
	CPUs         int       `json:"cpus"`
	MemoryMiB    int       `json:"memory_mib"`
	DiskBytes    int64     `json:"disk_bytes"`
	CreatedAt    time.Time `json:"created_at"`
	BuildSeconds float64   `json:"build_seconds"`
}

// shape is what a template is made for: the VM's image, VMM and size.
type shape struct {
	img       store.Image
	vmm       string
	cpus, mem int
	disk      int64
	kernel    string
	initrd    string
}

func shapeOf(row store.VM, img store.Image) shape {
	return shape{img: img, vmm: row.VMM, cpus: row.CPUs, mem: row.MemoryMiB, disk: row.DiskBytes, kernel: row.Kernel, initrd: row.Initrd}
}

// machineSpec is the launch spec the template of sh and its clones share,
// apart from the per-VM parts.
func (s *Service) machineSpec(sh shape, id, dir string) vmm.Spec {
	return vmm.Spec{
		ID: id, Name: id, Dir: dir,
		CPUs: sh.cpus, MemoryMiB: sh.mem,
		Kernel: sh.kernel, Initrd: sh.initrd,
		ConsoleLog: filepath.Join(dir, "console.log"), Accel: s.cfg.Accel,
		Agent: true,
	}
}

// templateKey is the key of the template for sh; ok is false when its
// VMM cannot save VMs.
func (s *Service) templateKey(sh shape) (key string, ok bool, err error) {
	sn, ok := s.drivers[sh.vmm].(vmm.Snapshotter)
	if !ok {
		return "", false, nil
	}
	spec := s.machineSpec(sh, "key", "/key")
	spec.Disk, spec.DetachedNIC, spec.MemoryFile = "/disk", true, "/memory"
	mk, err := sn.MachineKey(spec)
	if err != nil {
		return "", true, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "banger template 1\n%s\n%s\n%s\n%s\n%d\n", mk, sh.img.ID, sh.img.Digest, sh.vmm, sh.disk)
	return hex.EncodeToString(h.Sum(nil))[:32], true, nil
}

func (s *Service) templateDir(key string) string {
	return filepath.Join(s.cfg.Dirs.TemplatesDir(), key)
}

// findTemplate returns the manifest of the template for sh, if one exists.
func (s *Service) findTemplate(sh shape) (templateManifest, bool) {
	key, ok, err := s.templateKey(sh)
	if err != nil || !ok {
		if err != nil {
			s.log.Warn("no template key", "err", err)
		}
		return templateManifest{}, false
	}
	m, err := readManifest(s.templateDir(key))
	if err != nil || m.Key != key {
		return templateManifest{}, false
	}
	return m, true
}

func readManifest(dir string) (templateManifest, error) {
	var m templateManifest
	b, err := os.ReadFile(filepath.Join(dir, tplManifest))
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// Templates returns the warm templates of image id (all when id is "").
func (s *Service) Templates(imageID string) []api.Template {
	entries, _ := os.ReadDir(s.cfg.Dirs.TemplatesDir())
	var out []api.Template
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(s.cfg.Dirs.TemplatesDir(), e.Name())
		m, err := readManifest(dir)
		if err != nil || (imageID != "" && m.ImageID != imageID) {
			continue
		}
		out = append(out, m.view(dir))
	}
	return out
}

func (m templateManifest) view(dir string) api.Template {
	return api.Template{Key: m.Key, Image: m.ImageName, ImageID: m.ImageID, VMM: m.VMM, Accel: m.Accel,
		CPUs: m.CPUs, MemoryMiB: m.MemoryMiB, DiskBytes: m.DiskBytes, Dir: dir, CreatedAt: m.CreatedAt,
		BuildSeconds: m.BuildSeconds, SizeBytes: allocated(dir)}
}

// allocated is the disk space the files in dir take.
func allocated(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
	}
	return n
}

// RemoveTemplates deletes the templates of image id (image rm). A
// template whose disk backs clones is retired instead: all but its disk
// goes now (no VM can be made from it any more), the disk with its last
// clone (dropUnusedTemplates).
func (s *Service) RemoveTemplates(imageID string) error {
	s.tplMu.Lock()
	defer s.tplMu.Unlock()
	users := s.templateUsers()
	var errs []error
	for _, t := range s.Templates(imageID) {
		s.dropTemplateMemoryLocked(t.Key)
		if n := len(users[t.Key]); n > 0 {
			s.log.Info("template retired; its disk stays for its clones", "key", t.Key, "clones", n)
			for _, f := range []string{tplManifest, tplRAM, tplState} {
				if err := os.Remove(filepath.Join(t.Dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			continue
		}
		if err := os.RemoveAll(t.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// templateUsers maps template keys to the ids of the VMs whose overlay
// disks they back. The caller holds tplMu.
func (s *Service) templateUsers() map[string][]string {
	users := map[string][]string{}
	entries, _ := os.ReadDir(s.cfg.Dirs.VMsDir())
	for _, e := range entries {
		if key, ok := s.cloneOf(e.Name()); ok {
			users[key] = append(users[key], e.Name())
		}
	}
	return users
}

// cloneOf returns the key of the template whose disk backs VM id's disk.
func (s *Service) cloneOf(id string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dirs.VMDir(id), cloneMarker))
	if err != nil {
		return "", false
	}
	key := strings.TrimSpace(string(b))
	return key, templateKeyRE.MatchString(key)
}

var templateKeyRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// dropUnusedTemplates removes retired templates (a folder without its
// manifest) whose disk no VM uses any more; called after a VM folder is
// removed, and at daemon start.
func (s *Service) dropUnusedTemplates() {
	s.tplMu.Lock()
	defer s.tplMu.Unlock()
	entries, _ := os.ReadDir(s.cfg.Dirs.TemplatesDir())
	var users map[string][]string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(s.cfg.Dirs.TemplatesDir(), e.Name())
		if _, err := os.Lstat(filepath.Join(dir, tplManifest)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if users == nil {
			users = s.templateUsers()
		}
		if len(users[e.Name()]) > 0 {
			continue
		}
		s.log.Info("removing the disk of a retired template: its last clone is gone", "key", e.Name())
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("remove retired template", "folder", dir, "err", err)
		}
	}
}

// vmDisk returns the disk of VM id and, for a clone whose disk is an
// overlay, the template disk backing it.
func (s *Service) vmDisk(id string) (disk, backing string, err error) {
	key, ok := s.cloneOf(id)
	if !ok {
		return s.diskPath(id), "", nil
	}
	backing = filepath.Join(s.templateDir(key), tplDisk)
	if _, err := os.Stat(backing); err != nil {
		return "", "", fmt.Errorf("the disk of this clone is an overlay of the disk of template %s, which is gone: %w", key[:12], err)
	}
	return filepath.Join(s.cfg.Dirs.VMDir(id), overlayName), backing, nil
}

// Warm makes the template of an image for a machine shape (defaults as vm
// create's), or returns the one that exists.
func (s *Service) Warm(ctx context.Context, p api.ImageWarmParams) (api.Template, error) {
	cp := api.VMCreateParams{Image: p.Image, CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes, VMM: p.VMM}
	row, err := s.validateCreate(ctx, &cp)
	if err != nil {
		return api.Template{}, err
	}
	if err := s.preflightStart(ctx, s.drivers[row.VMM]); err != nil {
		return api.Template{}, err
	}
	img, err := store.GetImage(ctx, s.store.DB, row.ImageID)
	if err != nil {
		return api.Template{}, err
	}
	sh := shapeOf(row, img)
	key, ok, err := s.templateKey(sh)
	if err != nil {
		return api.Template{}, err
	}
	if !ok {
		return api.Template{}, api.Errorf(api.ErrInvalid, "the %s VMM cannot save VMs: warm templates need qemu or firecracker (--vmm)", row.VMM)
	}
	// One build per key at a time; a second caller waits and finds it.
	unlock, err := s.lockCtx(ctx, "template-"+key, "")
	defer unlock()
	if err != nil {
		return api.Template{}, err
	}
	if m, err := readManifest(s.templateDir(key)); err == nil && m.Key == key {
		t := m.view(s.templateDir(key))
		t.Reused = true
		return t, nil
	}
	m, err := s.buildTemplate(ctx, sh, key)
	if err != nil {
		return api.Template{}, fmt.Errorf("warm image %q: %w", img.Name, err)
	}
	return m.view(s.templateDir(key)), nil
}

// buildTemplate boots a guest of sh, quiesces it, saves it and moves the
// result to the template folder of key. On failure nothing is left.
func (s *Service) buildTemplate(ctx context.Context, sh shape, key string) (m templateManifest, err error) {
	t0 := time.Now()
	id := store.NewID()
	dir := filepath.Join(s.cfg.Dirs.TemplatesDir(), ".build-"+id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, fmt.Errorf("create template folder: %w", err)
	}
	drv := s.drivers[sh.vmm]
	byPath := vmm.SnapshotsByPath(drv)
	var st vmm.State
	tap := ""
	defer func() {
		if err != nil {
			if st.PID > 0 {
				s.dropAgentSession(st.AgentSocket)
				err = errors.Join(err, stopErr(drv.Stop(context.WithoutCancel(ctx), st, true, 0)))
			}
			if tap != "" {
				err = errors.Join(err, s.deleteTAP(tap))
			}
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	progress.Report(ctx, api.Progress{Phase: PhaseDisk, Message: fmt.Sprintf("copying image %s into the template's %s disk", sh.img.Name, units.IEC(sh.disk))})
	disk := filepath.Join(dir, tplDisk)
	if err := image.CloneDisk(ctx, sh.img.Path, disk, sh.disk); err != nil {
		return m, err
	}
	// A host key of its own, so that the guest generates none (every
	// clone replaces it with its own).
	hostKey, err := sshkey.New("root@template")
	if err != nil {
		return m, fmt.Errorf("make ssh host key: %w", err)
	}
	files := []image.File{
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: hostKey.Private},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Data: []byte(hostKey.PublicLine() + "\n")},
		{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: []byte(s.cfg.SSHPublicKey + "\n")},
	}
	if err := image.InjectFiles(ctx, disk, files); err != nil {
		return m, fmt.Errorf("write the ssh key into the disk: %w", err)
	}
	mem, err := newMemory(int64(sh.mem) << 20)
	if err != nil {
		return m, err
	}
	defer mem.Close()

	runAs, release, err := s.reserveVMMUser(ctx, id)
	if err != nil {
		return m, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	defer release()
	mac, err := network.RandomMAC()
	if err != nil {
		return m, err
	}
	spec := s.machineSpec(sh, id, dir)
	spec.Disk, spec.DetachedNIC, spec.MAC, spec.RunAs = disk, true, mac, runAs
	spec.MemoryFile, spec.MemoryShared = memPath(mem), true
	if vmm.UsesVsock(drv) {
		// Every clone keeps it: a snapshot load cannot change it.
		spec.VsockCID = vmm.GuestCID
	}
	if byPath {
		// Its VMM saves the network device with its host side: a TAP of
		// the template's own, on no bridge and down (each clone's
		// replaces it).
		owner := vmm.Self()
		if runAs != nil {
			owner = *runAs
		}
		if err := s.net.CreateDetachedTAP(network.TAPName(id), owner); err != nil {
			return m, err
		}
		tap = network.TAPName(id)
		spec.DetachedNIC, spec.TAP = false, tap
	}
	// No banger.ip: the template's network stays unconfigured (each
	// clone gets its own).
	spec.KernelArgs = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw banger.hostname=template"
	progress.Report(ctx, api.Progress{Phase: PhaseVMM, Message: "starting " + drv.Name() + " for the template"})
	if st, err = drv.Start(ctx, spec); err != nil {
		return m, err
	}
	b, _ := json.Marshal(st)
	if err := atomicfile.WriteFile(filepath.Join(dir, tplVMM), b, 0o600); err != nil {
		return m, err
	}
	progress.Report(ctx, api.Progress{Phase: PhaseBoot, Message: bootMessage(drv, st)})
	if err := s.waitAgent(ctx, drv, st); err != nil {
		return m, fmt.Errorf("%w\n--- last lines of the serial console ---\n%s", err, consoleTail(spec.ConsoleLog, 0, 25))
	}
	progress.Report(ctx, api.Progress{Phase: PhaseAgent, Message: "waiting for the guest's boot to finish, then syncing its disk"})
	qctx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout+30*time.Second)
	defer cancel()
	var qr guestid.QuiesceResult
	err = s.withSession(qctx, st, func(sess *agent.Session) error {
		return sess.Call(qctx, guestid.OpQuiesce, guestid.QuiesceParams{BootTimeoutSeconds: int(s.cfg.BootTimeout.Seconds())}, &qr)
	})
	if err != nil {
		return m, fmt.Errorf("quiesce the template guest: %w", err)
	}
	parked, err := s.parkAgent(ctx, drv, st)
	if err != nil {
		return m, fmt.Errorf("prepare the template's agent for clones: %w", err)
	}
	sf, err := os.OpenFile(filepath.Join(dir, tplState), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		parked.Close()
		return m, err
	}
	err = drv.(vmm.Snapshotter).SaveState(ctx, st, sf)
	sf.Close()
	parked.Close()
	if err != nil {
		return m, err
	}
	if err := drv.Stop(ctx, st, true, 0); err != nil {
		return m, stopErr(err)
	}
	st = vmm.State{}
	if tap != "" {
		if err := s.deleteTAP(tap); err != nil {
			return m, err
		}
		tap = ""
	}
	ram, err := os.OpenFile(filepath.Join(dir, tplRAM), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return m, err
	}
	err = image.SparseCopy(ctx, ram, mem, int64(sh.mem)<<20)
	if err == nil {
		err = ram.Sync()
	}
	ram.Close()
	if err != nil {
		return m, fmt.Errorf("write the template's memory: %w", err)
	}
	// The template keeps its own files only; whatever the VMM left (its
	// sockets, output, log or folder, named by the driver) goes.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return m, err
	}
	for _, e := range entries {
		if n := e.Name(); n != tplRAM && n != tplState && n != tplDisk {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
	m = templateManifest{Key: key, ImageID: sh.img.ID, ImageName: sh.img.Name, VMM: sh.vmm, Accel: s.cfg.Accel,
		CPUs: sh.cpus, MemoryMiB: sh.mem, DiskBytes: sh.disk, CreatedAt: time.Now().UTC(),
		BuildSeconds: time.Since(t0).Seconds()}
	b, _ = json.MarshalIndent(m, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, tplManifest), b, 0o600); err != nil {
		return m, err
	}
	for _, f := range []string{tplRAM, tplState, tplDisk, tplManifest} {
		mode := os.FileMode(0o400)
		if byPath && (f == tplRAM || f == tplState) {
			// Linked into each clone's jail, read by its VMM user.
			mode = 0o444
		}
		if err := os.Chmod(filepath.Join(dir, f), mode); err != nil {
			return m, err
		}
	}
	if err := os.Rename(dir, s.templateDir(key)); err != nil {
		return m, fmt.Errorf("move the template into place: %w", err)
	}
	s.log.Info("template made", "image", sh.img.Name, "key", key, "system", qr.SystemState, "udev_settled", qr.UdevSettled, "took", time.Since(t0).Round(time.Millisecond))
	return m, nil
}

// waitAgent waits until the guest agent of st answers, the VMM exits or
// BootTimeout passes.
func (s *Service) waitAgent(ctx context.Context, drv vmm.Driver, st vmm.State) error {
	deadline := time.Now().Add(s.cfg.BootTimeout)
	for {
		_, err := s.pingAgent(ctx, st, 2*time.Second)
		if err == nil {
			return nil
		}
		if !drv.Alive(st) {
			return fmt.Errorf("the %s process exited during boot", drv.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest agent did not answer within %s: %w", s.cfg.BootTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// parkAgent leaves the template's agent waiting for a session, so that a
// clone's first sync is answered at once: a session still running in the
// saved guest would take the clone's sync for garbage and drop it, costing
// every clone a sync attempt (500 ms). The agent ends the build's session
// (agent.Session.End), then answers a line-protocol ping on a new
// connection, which only an agent without a session does. That connection
// stays open until the state is saved, so that the agent is not told the
// host went away meanwhile. An agent that predates End gets its session
// ended by the ping (its multiplexer takes it for garbage) and answers
// the next one.
func (s *Service) parkAgent(ctx context.Context, drv vmm.Driver, st vmm.State) (io.Closer, error) {
	err := s.withSession(ctx, st, func(sess *agent.Session) error { return sess.End(ctx) })
	s.dropAgentSession(st.AgentSocket)
	if err != nil && !errors.Is(err, agent.ErrUnknownOpCode) {
		return nil, fmt.Errorf("end the build's agent session: %w", err)
	}
	conn, err := vmm.DialAgent(ctx, drv, st)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.cfg.AgentTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, _, err = agent.Ping(pctx, conn)
		cancel()
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || time.Now().After(deadline) {
			conn.Close()
			return nil, fmt.Errorf("the agent did not answer a ping outside its session: %w", err)
		}
	}
}

// newMemory is an empty memfd of size bytes that can be sealed.
func newMemory(size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("banger-template", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:banger-template")
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size the template memory: %w", err)
	}
	return f, nil
}

// memPath is the path through which the daemon (and, passed on, a VMM)
// reopens f.
func memPath(f *os.File) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()) }

// templateMemory returns the sealed memfd holding the RAM of template
// key, loading it from the template's ram file on first use.
func (s *Service) templateMemory(ctx context.Context, m templateManifest) (*os.File, error) {
	s.tplMu.Lock()
	defer s.tplMu.Unlock()
	if f := s.tplMem[m.Key]; f != nil {
		return f, nil
	}
	src, err := os.Open(filepath.Join(s.templateDir(m.Key), tplRAM))
	if err != nil {
		return nil, err
	}
	defer src.Close()
	size := int64(m.MemoryMiB) << 20
	if fi, err := src.Stat(); err != nil || fi.Size() != size {
		return nil, fmt.Errorf("template %s: its memory file is not %d bytes long", m.Key, size)
	}
	mem, err := newMemory(0)
	if err != nil {
		return nil, err
	}
	if err := image.SparseCopy(ctx, mem, src, size); err != nil {
		mem.Close()
		return nil, fmt.Errorf("load the template's memory: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mem.Close()
		return nil, fmt.Errorf("seal the template's memory: %w", err)
	}
	if s.tplMem == nil {
		s.tplMem = map[string]*os.File{}
	}
	s.tplMem[m.Key] = mem
	return mem, nil
}

// dropTemplateMemoryLocked closes the memory of template key; the
// caller holds tplMu.
func (s *Service) dropTemplateMemoryLocked(key string) {
	if f := s.tplMem[key]; f != nil {
		f.Close()
		delete(s.tplMem, key)
	}
}

// clone is what booting a VM from a template needs beyond its row.
type clone struct {
	m       templateManifest
	mem     *os.File
	hostKey sshkey.Pair
}

// makeCloneDisk creates the VM folder and the clone's disk (the clone
// writes its identity in the guest): an overlay of the template's disk
// under a VMM that takes one, else a copy. It pins the VM's new host key.
func (s *Service) makeCloneDisk(ctx context.Context, row store.VM, m templateManifest, steps *stepClock) (sshkey.Pair, error) {
	dir := s.cfg.Dirs.VMDir(row.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return sshkey.Pair{}, fmt.Errorf("create vm folder: %w", err)
	}
	if ov, ok := s.drivers[row.VMM].(vmm.Overlayer); ok {
		if err := s.makeOverlay(ctx, ov, row, m); err != nil {
			return sshkey.Pair{}, err
		}
	} else if err := image.CloneDisk(ctx, filepath.Join(s.templateDir(m.Key), tplDisk), s.diskPath(row.ID), row.DiskBytes); err != nil {
		return sshkey.Pair{}, fmt.Errorf("copy the template's disk: %w", err)
	}
	steps.done("folder and disk")
	hostKey, err := sshkey.New("root@" + row.Name)
	if err != nil {
		return sshkey.Pair{}, fmt.Errorf("make ssh host key: %w", err)
	}
	kh := fmt.Sprintf("%s %s\n", row.IP, hostKey.Key)
	err = atomicfile.WriteFile(s.knownHosts(row.ID), []byte(kh), 0o600)
	steps.done("host key")
	return hostKey, err
}

// makeOverlay makes VM row's disk an overlay of the disk of template m.
// The marker that makes the template's disk stay is written first, under
// tplMu, and only while the template is still there (image rm retires it
// under the same lock).
func (s *Service) makeOverlay(ctx context.Context, ov vmm.Overlayer, row store.VM, m templateManifest) error {
	s.tplMu.Lock()
	defer s.tplMu.Unlock()
	if _, err := os.Stat(filepath.Join(s.templateDir(m.Key), tplManifest)); err != nil {
		return fmt.Errorf("template %s was removed meanwhile: %w", m.Key[:12], err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.cfg.Dirs.VMDir(row.ID), cloneMarker), []byte(m.Key+"\n"), 0o600); err != nil {
		return fmt.Errorf("mark the vm a clone: %w", err)
	}
	disk, backing, err := s.vmDisk(row.ID)
	if err == nil {
		err = ov.CreateOverlay(ctx, disk, backing, row.DiskBytes)
	}
	if err != nil {
		return fmt.Errorf("make the clone's disk: %w", err)
	}
	return nil
}

// giveIdentity makes the clone row (running as st) a machine of its own;
// reachable is called as soon as the guest can be reached with its new
// address and host key (see guestid.Give).
func (s *Service) giveIdentity(ctx context.Context, row *store.VM, st vmm.State, c *clone, reachable func()) error {
	ip, err := netip.ParseAddr(row.IP)
	if err != nil {
		return err
	}
	mid := make([]byte, 16)
	entropy := make([]byte, 64)
	rand.Read(mid)
	rand.Read(entropy)
	p := guestid.IdentityParams{
		Hostname: row.Name, MachineID: hex.EncodeToString(mid),
		MAC: row.MAC, Address: netip.PrefixFrom(ip, s.cfg.Subnet.Bits()).String(),
		Gateway: network.Gateway(s.cfg.Subnet).String(), DNS: s.cfg.DNS,
		HostKey: string(c.hostKey.Private), HostKeyPub: c.hostKey.PublicLine(),
		Entropy: entropy,
	}
	ictx, cancel := context.WithTimeout(ctx, s.cfg.AgentTimeout)
	defer cancel()
	var res guestid.IdentityResult
	err = s.withSession(ictx, st, func(sess *agent.Session) (err error) {
		p.HostTimeNanos = time.Now().UnixNano()
		res, err = guestid.Give(ictx, sess, p, reachable)
		return err
	})
	if err != nil {
		return fmt.Errorf("give the clone its identity through the guest agent: %w", err)
	}
	for _, st := range res.Steps {
		s.log.Debug("step in the guest", "vm", row.Name, "step", "identity: "+st.Name, "took", time.Duration(st.Micros)*time.Microsecond)
	}
	s.log.Info("clone identity set", "vm", row.Name, "interface", res.Interface, "ssh_reloaded", res.SSHReloaded, "clock_set", res.ClockSet)
	return nil
}

// sweepTemplateBuilds removes what template builds of an earlier daemon
// left: their VMM (recorded in vmm.json, or, when the daemon died before
// it could record it, the process that holds the build's disk) and
// folder.
func (s *Service) sweepTemplateBuilds(ctx context.Context) {
	entries, err := os.ReadDir(s.cfg.Dirs.TemplatesDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("read templates folder", "err", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".build-") {
			continue
		}
		dir := filepath.Join(s.cfg.Dirs.TemplatesDir(), e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, tplVMM)); err == nil {
			if st, err := vmm.DecodeState(b); err == nil {
				if drv := s.drivers[st.Driver]; drv != nil {
					if err := drv.Stop(ctx, st, true, 0); err != nil {
						s.log.Warn("stop the vmm of an unfinished template", "folder", dir, "err", err)
						continue
					}
				}
			}
		}
		// A daemon killed while its driver launched the VMM left it
		// running without vmm.json: it holds the build's disk.
		n, err := killHolders(ctx, filepath.Join(dir, tplDisk), vmm.DiskAliases(s.drivers)...)
		if n > 0 {
			s.log.Warn("killed the vmm an unfinished template's launch left running", "folder", dir, "processes", n)
		}
		if err != nil {
			s.log.Warn("stop the vmm of an unfinished template", "folder", dir, "err", err)
			continue
		}
		// A template of a VMM that snapshots by path had a TAP.
		if tap := network.TAPName(strings.TrimPrefix(e.Name(), ".build-")); s.net.TAPExists(tap) {
			if err := s.deleteTAP(tap); err != nil {
				s.log.Warn("remove the tap of an unfinished template", "folder", dir, "err", err)
			}
		}
		s.log.Warn("removing unfinished template", "folder", dir)
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("remove unfinished template", "folder", dir, "err", err)
		}
	}
}
