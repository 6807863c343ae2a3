package vm

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// fakeNet records what the service asks of the host network; the paths
// tested with it never need a real bridge.
type fakeNet struct {
	mu      sync.Mutex
	taps    map[string]bool
	deleted []string
}

func (n *fakeNet) EnsureBridge(context.Context) error { return nil }
func (n *fakeNet) CreateTAP(name, mac, ip string, _ vmm.Identity) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.taps[name] = true
	return nil
}
func (n *fakeNet) CreateDetachedTAP(name string, o vmm.Identity) error {
	return n.CreateTAP(name, "", "", o)
}
func (n *fakeNet) AdoptTAP(name, mac, ip string) error { return nil }
func (n *fakeNet) DeleteTAP(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.taps, name)
	n.deleted = append(n.deleted, name)
	return nil
}
func (n *fakeNet) TAPExists(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.taps[name]
}

// newTestService returns a service over a fresh store, with the QEMU
// driver and a fake network.
func newTestService(t *testing.T) (*Service, *fakeNet) {
	t.Helper()
	return newServiceWith(t, map[string]vmm.Driver{"qemu": qemu.New("", nil)})
}

// newServiceWith returns a service over a fresh store, with drivers and a
// fake network.
func newServiceWith(t testing.TB, drivers map[string]vmm.Driver) (*Service, *fakeNet) {
	t.Helper()
	root := t.TempDir()
	dirs := paths.Dirs{Config: root, State: filepath.Join(root, "state"), Data: filepath.Join(root, "data"),
		Cache: filepath.Join(root, "cache"), Runtime: filepath.Join(root, "run")}
	if err := dirs.Ensure(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), dirs.Database())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &fakeNet{taps: map[string]bool{}}
	s := New(Config{Dirs: dirs, StopTimeout: time.Second}, st, drivers, n, slog.New(slog.DiscardHandler))
	t.Cleanup(s.Shutdown)
	return s, n
}

// insertVM stores a VM row (and its image) with the given driver state.
func insertVM(t *testing.T, s *Service, name, driverState string) store.VM {
	t.Helper()
	ctx := context.Background()
	img := store.Image{ID: "img-" + name, Name: "img-" + name, Source: "test", Path: "/nonexistent", CreatedAt: time.Now()}
	if err := store.InsertImage(ctx, s.store.DB, &img); err != nil {
		t.Fatal(err)
	}
	row := store.VM{ID: "id-" + name, Name: name, ImageID: img.ID, CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30,
		Kernel: "/k", KernelArgs: "console=ttyS0", MAC: "52:54:00:00:00:0" + name[len(name)-1:], VMM: "qemu",
		DesiredState: store.DesiredRunning, DriverState: driverState}
	if err := store.InsertVM(ctx, s.store.DB, &row); err != nil {
		t.Fatal(err)
	}
	return row
}

// TestUnreadableStateLeavesVMAlone: a driver state that does not decode,
// or that a newer daemon wrote, must not be taken for "stopped": Recover
// keeps the TAP, and start, stop and delete refuse, naming the reason.
func TestUnreadableStateLeavesVMAlone(t *testing.T) {
	for _, tc := range []struct{ name, state, want string }{
		{"vm1", `{"version":2,"driver":"qemu","pid":1,"start_time":1,"tap":"x"}`, "version 2"},
		{"vm2", `{"version":1,"pid":"not a number"}`, "cannot unmarshal"},
		{"vm3", `{"pid":1}`, "version 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, n := newTestService(t)
			row := insertVM(t, s, tc.name, tc.state)
			tap := network.TAPName(row.ID)
			n.taps[tap] = true
			ctx := context.Background()
			if err := s.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			if len(n.deleted) > 0 {
				t.Fatalf("Recover deleted TAPs %v of a VM whose state it cannot read", n.deleted)
			}
			after, err := store.GetVM(ctx, s.store.DB, row.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.DriverState != tc.state || after.DesiredState != store.DesiredRunning || after.LastError != "" {
				t.Fatalf("Recover changed the row: %+v", after)
			}
			v, err := s.Get(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != api.StateUnknown || !strings.Contains(strings.Join(v.Notes, "\n"), tc.want) {
				t.Fatalf("view: state %s, notes %q; want unknown and a note with %q", v.State, v.Notes, tc.want)
			}
			for what, err := range map[string]error{
				"start":  func() error { _, err := s.Start(ctx, tc.name); return err }(),
				"stop":   func() error { _, err := s.Stop(ctx, tc.name, true); return err }(),
				"delete": s.Delete(ctx, tc.name, true),
			} {
				if !errors.Is(err, api.ErrPrecondition) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "leaves it alone") {
					t.Errorf("%s: %v, want a precondition error naming %q", what, err, tc.want)
				}
			}
			if after, _ := store.GetVM(ctx, s.store.DB, row.ID); after.DriverState != tc.state {
				t.Fatalf("an operation changed the state to %q", after.DriverState)
			}
		})
	}
}
