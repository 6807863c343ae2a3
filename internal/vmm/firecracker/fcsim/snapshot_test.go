package fcsim

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// TestSnapshot: a paused microVM is saved to a state and a memory file of
// its size; a fresh simulator loads them with its own TAP and vsock socket
// in place of the saved ones, reopens the drive, leaves the memory file
// unwritten and runs (resume_vm). The rules Firecracker applies are kept:
// no snapshot of a running or unstarted microVM, no load after a
// boot-specific resource or after the start, overrides must name saved
// devices.
func TestSnapshot(t *testing.T) {
	s := newSim(t)
	state, mem := filepath.Join(s.dir, "snap.state"), filepath.Join(s.dir, "snap.mem")
	create := fcapi.SnapshotCreateParams{SnapshotPath: state, MemFilePath: mem, SnapshotType: fcapi.SnapshotFull}
	wantFault(t, s.c.Put(ctx, "/snapshot/create", create), errPreBoot)
	tap1 := vmmtest.TAP(t, os.Geteuid())
	s.put(t, "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: tap1, GuestMAC: "52:54:00:00:00:01"})
	s.put(t, "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: filepath.Join(s.dir, "v.sock")})
	s.boot(t)
	wantFault(t, s.c.Put(ctx, "/snapshot/create", create), errCreateRunning)
	wantFault(t, s.c.Put(ctx, "/snapshot/create", rawJSON(`{"snapshot_path":"/s"}`)), "deserializing the json body")
	if err := s.c.Patch(ctx, "/vm", fcapi.VM{State: fcapi.VMPaused}); err != nil {
		t.Fatal(err)
	}
	s.put(t, "/snapshot/create", create)
	fi, err := os.Stat(mem)
	if err != nil || fi.Size() != 128<<20 {
		t.Fatalf("memory file: %v, size %v, want 128 MiB", err, fi)
	}
	os.Chmod(mem, 0o400)
	before, _ := os.ReadFile(mem)

	c := newSim(t)
	c.guest.Handle(EchoPort, Echo)
	tap2 := vmmtest.TAP(t, os.Geteuid())
	uds := filepath.Join(c.dir, "clone.sock")
	load := fcapi.SnapshotLoadParams{SnapshotPath: state,
		MemBackend:       &fcapi.MemoryBackend{BackendType: fcapi.MemBackendFile, BackendPath: mem},
		NetworkOverrides: []fcapi.NetworkOverride{{IfaceID: "eth0", HostDevName: tap2}},
		VsockOverride:    &fcapi.VsockOverride{UDSPath: uds},
		ClockRealtime:    new(true), ResumeVM: new(true)}
	bad := load
	bad.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: "eth9", HostDevName: tap2}}
	wantFault(t, c.c.Put(ctx, "/snapshot/load", bad), "Unknown Network Device.")
	bad = load
	bad.MemBackend = &fcapi.MemoryBackend{BackendType: fcapi.MemBackendFile, BackendPath: state}
	wantFault(t, c.c.Put(ctx, "/snapshot/load", bad), "Failed to load guest memory")
	wantFault(t, c.c.Put(ctx, "/snapshot/load", rawJSON(`{"snapshot_path":"/s","mem_backend":{"backend_type":"Memfd","backend_path":"/m"}}`)), "deserializing the json body")
	c.put(t, "/snapshot/load", load)
	if st := c.State(); st != fcapi.StateRunning {
		t.Fatalf("state after load with resume_vm: %q", st)
	}
	r := c.guest.Restored
	if r == nil || len(r.Nets) != 1 || r.Nets[0].TAP.Name() != "tap:"+tap2 || r.Nets[0].MAC != "52:54:00:00:00:01" ||
		len(r.Drives) != 1 || r.Drives[0].Path != s.disk || r.VsockCID != 3 || r.MemMiB != 128 {
		t.Fatalf("restored with %+v", r)
	}
	// GET /vm/config: the snapshot's guest CID with the override's
	// socket, no boot source (a restored microVM has none); the saved
	// one's has it.
	var cfg, orig fcapi.FullVMConfiguration
	if err := c.c.Get(ctx, "/vm/config", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Vsock == nil || cfg.Vsock.GuestCID != 3 || cfg.Vsock.UDSPath != uds || cfg.BootSource != nil ||
		len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0].HostDevName != tap2 || cfg.MachineConfig.MemSizeMib != 128 {
		t.Errorf("GET /vm/config of the restored microVM: %+v (vsock %+v)", cfg, cfg.Vsock)
	}
	if err := s.c.Get(ctx, "/vm/config", &orig); err != nil || orig.BootSource == nil || len(orig.Drives) != 1 {
		t.Errorf("GET /vm/config of the booted microVM: %+v, %v", orig, err)
	}
	conn, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatalf("the vsock override's socket: %v", err)
	}
	conn.Write([]byte("CONNECT 7\n"))
	if line := readLine(t, conn); line != "OK 1073741824" {
		t.Fatalf("vsock through the override: %q", line)
	}
	conn.Close()
	if after, _ := os.ReadFile(mem); string(after) != string(before) {
		t.Fatal("the load wrote the memory file")
	}
	wantFault(t, c.c.Put(ctx, "/snapshot/load", load), errPostBoot)

	// A load after a boot-specific resource is refused.
	d := newSim(t)
	d.put(t, "/machine-config", fcapi.MachineConfiguration{VcpuCount: 2, MemSizeMib: 128})
	wantFault(t, d.c.Put(ctx, "/snapshot/load", load), errLoadAfterConfig)
}
