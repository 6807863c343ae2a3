package fcsim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// Snapshots, as Firecracker v1.16.1 takes and loads them (vmm/src/persist.rs,
// rpc_interface.rs):
//
//   - PUT /snapshot/create is refused before InstanceStart and while the
//     microVM runs (it must be paused); only a Full snapshot is simulated
//     (a Diff needs dirty page tracking). The memory file is created (or
//     truncated) and sized to the guest memory, then filled; the state
//     file holds the microVM's configuration and the guest's device state.
//   - PUT /snapshot/load is refused after InstanceStart or once a
//     boot-specific resource (machine-config, boot-source, drives,
//     network interfaces, vsock, serial) was configured; the logger may be
//     set first. The state file is opened, then the memory file read-only
//     (a File backend is mapped privately: the guest's writes never reach
//     it); the drives are reopened by their saved paths, each network
//     override opens its TAP in place of the saved one (an override naming
//     no saved interface is refused), the vsock override binds its socket
//     in place of the saved one (refused without a saved vsock device).
//     The microVM is then Paused, or Running with resume_vm.
//
// The state file is the simulator's own format (Firecracker's is a
// versioned binary one nobody else reads): a JSON line of the
// configuration, then the guest's device state.

// snapshotConfig is the configuration a snapshot keeps.
type snapshotConfig struct {
	Simulator string                     `json:"simulator"`
	Machine   fcapi.MachineConfiguration `json:"machine"`
	Cmdline   string                     `json:"cmdline"`
	// Boot is the boot source: QEMUGuest rebuilds the same machine
	// (its kernel loader) to restore into; Firecracker needs no kernel.
	Boot   *fcapi.BootSource        `json:"boot,omitempty"`
	Drives []fcapi.Drive            `json:"drives"`
	Ifaces []fcapi.NetworkInterface `json:"ifaces"`
	Vsock  *fcapi.Vsock             `json:"vsock,omitempty"`
}

// snapshotMagic marks a state file the simulator wrote.
const snapshotMagic = "fcsim snapshot 1"

// Fault messages of the snapshot requests.
const (
	errLoadAfterConfig = "Loading a microVM snapshot not allowed after configuring boot-specific resources."
	errCreateRunning   = "Create snapshot error: Cannot save the microVM state: the microVM must be paused."
)

// snapshotCreateLocked takes a full snapshot of the paused guest.
func (s *Server) snapshotCreateLocked(body []byte) error {
	var p fcapi.SnapshotCreateParams
	decode(body, &p)
	if p.SnapshotType != "" && p.SnapshotType != fcapi.SnapshotFull {
		return fault("fcsim: %s snapshots are not simulated (only %s)", p.SnapshotType, fcapi.SnapshotFull)
	}
	if s.state != fcapi.StatePaused {
		return fault("%s", errCreateRunning)
	}
	cmdline, err := s.cmdlineLocked()
	if err != nil {
		return fault("Create snapshot error: %v", err)
	}
	cfg := snapshotConfig{Simulator: snapshotMagic, Machine: s.machine, Cmdline: cmdline, Boot: s.boot, Vsock: s.vsock}
	for _, id := range s.driveOrder {
		cfg.Drives = append(cfg.Drives, s.drives[id].cfg)
	}
	for _, id := range s.ifaceOrder {
		cfg.Ifaces = append(cfg.Ifaces, s.ifaces[id].cfg)
	}
	mem, err := os.OpenFile(p.MemFilePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fault("Create snapshot error: Cannot write memory file: %s", OSError(err))
	}
	defer mem.Close()
	if err := mem.Truncate(int64(s.machine.MemSizeMib) << 20); err != nil {
		return fault("Create snapshot error: Cannot write memory file: %s", OSError(err))
	}
	state, err := os.OpenFile(p.SnapshotPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fault("Create snapshot error: Cannot open snapshot file: %s", OSError(err))
	}
	defer state.Close()
	w := bufio.NewWriter(state)
	line, _ := json.Marshal(cfg)
	w.Write(append(line, '\n'))
	if err := s.opts.Guest.Snapshot(w, mem); err != nil {
		return fault("Create snapshot error: fcsim: save the guest: %v", err)
	}
	if err := w.Flush(); err != nil {
		return fault("Create snapshot error: Cannot write snapshot file: %s", OSError(err))
	}
	s.logLocked(levelInfo, "fc_api", "fcsim: snapshot of %d MiB saved to %s and %s", s.machine.MemSizeMib, p.SnapshotPath, p.MemFilePath)
	return nil
}

// configuredLocked reports whether a boot-specific resource was set.
func (s *Server) configuredLocked() bool {
	return s.boot != nil || len(s.drives) > 0 || len(s.ifaces) > 0 || s.vsock != nil || s.serialPath != "" ||
		s.machine != (fcapi.MachineConfiguration{VcpuCount: 1, MemSizeMib: 128})
}

// snapshotLoadLocked restores a microVM from a snapshot.
func (s *Server) snapshotLoadLocked(body []byte) (err error) {
	var p fcapi.SnapshotLoadParams
	decode(body, &p)
	if s.configuredLocked() {
		return fault("%s", errLoadAfterConfig)
	}
	if p.MemBackend == nil {
		// mem_file_path (deprecated) is not in the bodies banger sends.
		return fault("fcsim: a snapshot load without mem_backend is not simulated")
	}
	if p.MemBackend.BackendType != fcapi.MemBackendFile {
		return fault("fcsim: the %s memory backend is not simulated", p.MemBackend.BackendType)
	}
	state, err := os.Open(p.SnapshotPath)
	if err != nil {
		return fault("Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: %s", OSError(err))
	}
	defer state.Close()
	r := bufio.NewReader(state)
	line, err := r.ReadBytes('\n')
	var cfg snapshotConfig
	if err != nil || json.Unmarshal(line, &cfg) != nil || cfg.Simulator != snapshotMagic {
		return fault("Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: not a snapshot of this simulator")
	}
	mem, err := os.Open(p.MemBackend.BackendPath)
	if err != nil {
		return fault("Load snapshot error: Failed to restore from snapshot: Failed to load guest memory: %s", OSError(err))
	}
	var opened []io.Closer
	defer func() {
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
		}
	}()
	opened = append(opened, mem)
	if fi, err := mem.Stat(); err != nil || fi.Size() < int64(cfg.Machine.MemSizeMib)<<20 {
		return fault("Load snapshot error: Failed to restore from snapshot: Failed to load guest memory: the memory file is shorter than the guest's %d MiB", cfg.Machine.MemSizeMib)
	}
	overrides := map[string]string{}
	for _, o := range p.NetworkOverrides {
		found := false
		for _, n := range cfg.Ifaces {
			found = found || n.IfaceID == o.IfaceID
		}
		if !found {
			return fault("Load snapshot error: Failed to restore from snapshot: Unknown Network Device.")
		}
		overrides[o.IfaceID] = o.HostDevName
	}
	if p.VsockOverride != nil {
		if cfg.Vsock == nil {
			return fault("Load snapshot error: Failed to restore from snapshot: Unknown Vsock Device.")
		}
		v := *cfg.Vsock
		v.UDSPath = p.VsockOverride.UDSPath
		cfg.Vsock = &v
	}
	boot := BootConfig{ID: s.opts.ID, Cmdline: cfg.Cmdline, VCPUs: cfg.Machine.VcpuCount, MemMiB: cfg.Machine.MemSizeMib, Serial: s.opts.Stdout}
	if cfg.Boot != nil {
		// Not Firecracker's doing: QEMU needs the same kernel loader.
		for _, k := range []struct {
			p string
			f **os.File
		}{{cfg.Boot.KernelImagePath, &boot.Kernel}, {cfg.Boot.InitrdPath, &boot.Initrd}} {
			if k.p == "" {
				continue
			}
			f, err := os.Open(k.p)
			if err != nil {
				return fault("Load snapshot error: fcsim: reopen %s for the simulator's QEMU: %s", k.p, OSError(err))
			}
			opened = append(opened, f)
			*k.f = f
		}
	}
	drives := map[string]*drive{}
	for _, d := range cfg.Drives {
		flag := os.O_RDWR
		ro := d.IsReadOnly != nil && *d.IsReadOnly
		if ro {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(d.PathOnHost, flag, 0)
		if err != nil {
			return fault("Load snapshot error: Failed to restore from snapshot: Failed to build microVM from snapshot: block device %s: %s", d.PathOnHost, OSError(err))
		}
		opened = append(opened, f)
		drives[d.DriveID] = &drive{cfg: d, file: f}
		boot.Drives = append(boot.Drives, BootDrive{ID: d.DriveID, Path: d.PathOnHost, File: f, ReadOnly: ro})
	}
	ifaces := map[string]*iface{}
	for _, n := range cfg.Ifaces {
		if name, ok := overrides[n.IfaceID]; ok {
			n.HostDevName = name
		}
		tap, err := openTAP(s.opts.DevTUN, n.HostDevName)
		if err != nil {
			return fault("Load snapshot error: Failed to restore from snapshot: Failed to build microVM from snapshot: Open tap device failed: %v", err)
		}
		opened = append(opened, tap)
		ifaces[n.IfaceID] = &iface{cfg: n, tap: tap}
		boot.Nets = append(boot.Nets, BootNet{ID: n.IfaceID, TAP: tap, MAC: n.GuestMAC})
	}
	var vsockLn net.Listener
	if cfg.Vsock != nil {
		vsockLn, err = net.Listen("unix", cfg.Vsock.UDSPath)
		if err != nil {
			return fault("Load snapshot error: Failed to restore from snapshot: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %s", OSError(err))
		}
		vsockLn.(*net.UnixListener).SetUnlinkOnClose(false)
		opened = append(opened, vsockLn)
		boot.VsockCID = cfg.Vsock.GuestCID
	}
	if err := s.opts.Guest.Restore(boot, r, mem); err != nil {
		return fault("Load snapshot error: Failed to restore from snapshot: fcsim: restore the guest: %v", err)
	}
	// The guest holds its memory now (mapped, or passed on).
	mem.Close()
	s.machine, s.boot, s.kernel, s.initrd, s.restored = cfg.Machine, cfg.Boot, boot.Kernel, boot.Initrd, true
	for _, d := range cfg.Drives {
		s.driveOrder = append(s.driveOrder, d.DriveID)
	}
	s.drives = drives
	for _, n := range cfg.Ifaces {
		s.ifaceOrder = append(s.ifaceOrder, n.IfaceID)
	}
	s.ifaces = ifaces
	if cfg.Vsock != nil {
		s.vsock, s.vsockLn = cfg.Vsock, vsockLn
		go s.acceptVsock(vsockLn)
	}
	s.state = fcapi.StatePaused
	if p.ResumeVM != nil && *p.ResumeVM {
		if err := s.opts.Guest.Pause(false); err != nil {
			return fault("Load snapshot error: fcsim: resume the guest: %v", err)
		}
		s.state = fcapi.StateRunning
	}
	s.runningLocked()
	s.logLocked(levelInfo, "fc_api", "fcsim: microVM restored from %s (memory %s, clock_realtime %v)", p.SnapshotPath, p.MemBackend.BackendPath, p.ClockRealtime != nil && *p.ClockRealtime)
	return nil
}

// errNoSnapshot is returned by a Guest that cannot be saved or restored.
var errNoSnapshot = errors.New("this guest cannot be snapshotted")

// readAllState reads a guest's device state to the end, for guests that
// keep it in memory.
func readAllState(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read the guest's device state: %w", err)
	}
	return b, nil
}
