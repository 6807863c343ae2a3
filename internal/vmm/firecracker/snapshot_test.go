package firecracker

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// TestSnapshotContract: the snapshot requests validate against
// Firecracker's specification, with unknown fields rejected, and a
// clone's load names its own TAP and vsock socket.
func TestSnapshotContract(t *testing.T) {
	spec := loadSpec(t)
	for name, s := range specVariants() {
		v := View(s)
		create := mustJSON(t, SnapshotCreate(v.Dir))
		if err := spec.ValidateRequest("PUT", "/snapshot/create", []byte(create)); err != nil {
			t.Errorf("%s: PUT /snapshot/create %s: %v", name, create, err)
		}
		s.IncomingState, s.MemoryFile = "/t/state", "/t/ram"
		v = View(s)
		for _, r := range LoadRequests(v) {
			body := mustJSON(t, r.Body)
			if err := spec.ValidateRequest(r.Method, r.Path, []byte(body)); err != nil {
				t.Errorf("%s: %s %s %s: %v", name, r.Method, r.Path, body, err)
			}
		}
		load := mustJSON(t, SnapshotLoad(v))
		if s.TAP != "" && !strings.Contains(load, `"network_overrides":[{"iface_id":"eth0","host_dev_name":"`+s.TAP+`"}]`) {
			t.Errorf("%s: the load does not give the clone its TAP: %s", name, load)
		}
		if s.VsockCID != 0 && !strings.Contains(load, `"vsock_override":{"uds_path":"`+v.Dir+"/"+VsockSocketName+`"}`) {
			t.Errorf("%s: the load does not give the clone its vsock socket: %s", name, load)
		}
		if !strings.Contains(load, `"clock_realtime":true`) || !strings.Contains(load, `"resume_vm":true`) {
			t.Errorf("%s: the load neither advances the clock nor resumes: %s", name, load)
		}
		if !strings.Contains(load, `"snapshot_path":"/proc/self/fd/`) || !strings.Contains(load, `"backend_type":"File","backend_path":"/proc/self/fd/`) {
			t.Errorf("%s: the load does not name the inherited state and memory: %s", name, load)
		}
		if jv := jailView(s); SnapshotLoad(jv).SnapshotPath != jailState || SnapshotLoad(jv).MemBackend.BackendPath != jailMemory {
			t.Errorf("%s: jailed, the load names %+v", name, SnapshotLoad(jv))
		}
	}
	// The validator refuses what Firecracker refuses.
	bad := fcapi.SnapshotLoadParams{SnapshotPath: "/s", MemBackend: &fcapi.MemoryBackend{BackendType: "Memfd", BackendPath: "/m"}}
	if err := spec.ValidateRequest("PUT", "/snapshot/load", []byte(mustJSON(t, bad))); err == nil {
		t.Error("a memory backend of an unknown type was accepted")
	}
	if err := spec.ValidateRequest("PUT", "/snapshot/create", []byte(`{"snapshot_path":"/s"}`)); err == nil {
		t.Error("a snapshot without its memory file was accepted")
	}
}

// TestSnapshotOnSimulator saves a running VM on the simulator (which
// checks every request against the specification and Firecracker's rules)
// and starts a clone from it, unjailed and jailed: the template's RAM
// lands in its memory file, the clone loads the snapshot (no boot) with
// its own TAP (the template's, still held by the paused template, would
// be refused) and vsock socket, runs, and leaves the memory file
// unwritten; nothing of the snapshot is left in Firecracker's folder.
func TestSnapshotOnSimulator(t *testing.T) {
	for _, jailed := range []bool{false, true} {
		t.Run(map[bool]string{false: "unjailed", true: "jailed"}[jailed], func(t *testing.T) {
			var d *Driver
			if jailed {
				d, _ = jailedDriver(t)
			} else {
				log, _ := vmmtest.Logger(t)
				d = testDriver(t, fakeBinary(t), log)
			}
			ctx := context.Background()
			tpl := testSpec(t, "template")
			mem := filepath.Join(tpl.Dir, "ram")
			f, err := os.Create(mem)
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(int64(tpl.MemoryMiB) << 20)
			f.Close()
			tpl.MemoryFile, tpl.MemoryShared = mem, true
			st, err := d.Start(ctx, tpl)
			if err != nil {
				t.Fatal(err)
			}
			vmmtest.EnsureStopped(t, st)
			k1, err := d.MachineKey(tpl)
			if err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(tpl.Dir, "state")
			sf, err := os.Create(state)
			if err != nil {
				t.Fatal(err)
			}
			err = d.SaveState(ctx, st, sf)
			sf.Close()
			if err != nil {
				t.Fatal(err)
			}
			if paused, _ := d.Paused(ctx, st); !paused {
				t.Fatal("the template runs on after SaveState")
			}
			ram, _ := os.ReadFile(mem)
			if !bytes.HasPrefix(ram, []byte("fcsim fake guest memory")) || len(ram) != tpl.MemoryMiB<<20 {
				t.Fatalf("the template's memory file does not hold its RAM (%d bytes, %q...)", len(ram), ram[:32])
			}
			host := filepath.Dir(st.ControlSocket)
			for _, n := range []string{SnapshotStateName, SnapshotMemoryName} {
				if _, err := os.Lstat(filepath.Join(host, n)); err == nil {
					t.Errorf("%s left in firecracker's folder", n)
				}
			}
			// Readable by the clones' VMM users, written by none.
			os.Chmod(state, 0o444)
			os.Chmod(mem, 0o444)

			c := testSpec(t, "clone")
			c.IncomingState, c.MemoryFile = state, mem
			if k2, _ := d.MachineKey(c); k2 != k1 {
				t.Error("the clone's machine key differs from its template's")
			}
			cst, err := d.Start(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			vmmtest.EnsureStopped(t, cst)
			info, err := NewClient(cst.ControlSocket, apiTimeout).InstanceInfo(ctx)
			if err != nil || info.State != fcapi.StateRunning {
				t.Fatalf("clone: %+v, %v", info, err)
			}
			con, _ := os.ReadFile(c.ConsoleLog)
			if !strings.Contains(string(con), "restored from a snapshot") || strings.Contains(string(con), "booting") {
				t.Fatalf("the clone was not restored from the snapshot:\n%s", con)
			}
			conn, err := DialVsock(ctx, cst.AgentSocket, fcsim.EchoPort)
			if err != nil {
				t.Fatalf("the clone's vsock socket: %v", err)
			}
			conn.Close()
			if after, _ := os.ReadFile(mem); !bytes.Equal(after, ram) {
				t.Error("the clone wrote the memory file")
			}
			for _, s := range []vmm.State{cst, st} {
				if err := d.Stop(ctx, s, true, 0); err != nil {
					t.Fatal(err)
				}
			}
			if jailed {
				assertJailGone(t, cst.Chroot, cst.Cgroups)
			}
		})
	}
}
