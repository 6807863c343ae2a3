package firecracker

import (
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
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
		load := mustJSON(t, SnapshotLoad(v, "/proc/self/fd/9"))
		if err := spec.ValidateRequest("PUT", "/snapshot/load", []byte(load)); err != nil {
			t.Errorf("%s: PUT /snapshot/load %s: %v", name, load, err)
		}
		if s.TAP != "" && !strings.Contains(load, `"network_overrides":[{"iface_id":"eth0","host_dev_name":"`+s.TAP+`"}]`) {
			t.Errorf("%s: the load does not give the clone its TAP: %s", name, load)
		}
		if s.VsockCID != 0 && !strings.Contains(load, `"vsock_override":{"uds_path":"`+v.Dir+"/"+VsockSocketName+`"}`) {
			t.Errorf("%s: the load does not give the clone its vsock socket: %s", name, load)
		}
		if !strings.Contains(load, `"clock_realtime":true`) || !strings.Contains(load, `"resume_vm":true`) {
			t.Errorf("%s: the load neither advances the clock nor resumes: %s", name, load)
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
