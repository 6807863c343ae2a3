package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func seedImage(t *testing.T, s *Store) Image {
	t.Helper()
	im := Image{ID: "img1", Name: "default", Source: "debian:bookworm", Path: "/x/rootfs.ext4", SizeBytes: 1 << 30}
	if err := InsertImage(context.Background(), s.DB, &im); err != nil {
		t.Fatal(err)
	}
	return im
}

func testVM(name, mac string) VM {
	return VM{ID: "id-" + name, Name: name, ImageID: "img1", CPUs: 1, MemoryMiB: 512, DiskBytes: 2 << 30,
		Kernel: "/k", KernelArgs: "console=ttyS0", MAC: mac, VMM: "qemu", DesiredState: DesiredStopped}
}

func TestMigrationsAreIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	for i := 0; i < 2; i++ {
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		v, err := s.SchemaVersion(context.Background())
		if err != nil || v != 7 {
			t.Fatalf("schema version = %d, %v; want 7", v, err)
		}
		var mode string
		s.DB.QueryRow("PRAGMA journal_mode").Scan(&mode)
		if mode != "wal" {
			t.Errorf("journal_mode = %q, want wal", mode)
		}
		s.Close()
	}
}

func TestVMRoundTripAndLease(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	vm := testVM("dev", "52:54:00:00:00:01")
	if err := InsertVM(ctx, s.DB, &vm); err != nil {
		t.Fatal(err)
	}
	if err := InsertLease(ctx, s.DB, "172.30.0.2", vm.ID); err != nil {
		t.Fatal(err)
	}
	got, err := GetVM(ctx, s.DB, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if got.IP != "172.30.0.2" || got.ImageName != "default" || got.MAC != vm.MAC || got.CreatedAt.IsZero() {
		t.Fatalf("got %+v", got)
	}
	byID, err := GetVM(ctx, s.DB, vm.ID)
	if err != nil || byID.Name != "dev" {
		t.Fatalf("get by id: %+v, %v", byID, err)
	}
	got.DesiredState = DesiredRunning
	got.DriverState = `{"pid":1}`
	if err := UpdateVM(ctx, s.DB, &got); err != nil {
		t.Fatal(err)
	}
	again, _ := GetVM(ctx, s.DB, "dev")
	if again.DesiredState != DesiredRunning || again.DriverState != `{"pid":1}` {
		t.Fatalf("update lost: %+v", again)
	}
	if err := DeleteVM(ctx, s.DB, vm.ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := CountLeases(ctx, s.DB); n != 0 {
		t.Fatalf("lease survived vm delete: %d", n)
	}
	if _, err := GetVM(ctx, s.DB, "dev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted vm: %v", err)
	}
	if err := DeleteVM(ctx, s.DB, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestUniqueConstraintsMapToErrExists(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	a := testVM("dev", "52:54:00:00:00:01")
	if err := InsertVM(ctx, s.DB, &a); err != nil {
		t.Fatal(err)
	}
	dupName := testVM("dev", "52:54:00:00:00:02")
	dupName.ID = "other"
	if err := InsertVM(ctx, s.DB, &dupName); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	dupMAC := testVM("dev2", "52:54:00:00:00:01")
	if err := InsertVM(ctx, s.DB, &dupMAC); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate mac: %v", err)
	}
	InsertLease(ctx, s.DB, "172.30.0.2", a.ID)
	b := testVM("b", "52:54:00:00:00:03")
	InsertVM(ctx, s.DB, &b)
	if err := InsertLease(ctx, s.DB, "172.30.0.2", b.ID); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate lease: %v", err)
	}
}

func TestUnknownImageIsRejected(t *testing.T) {
	s := openTest(t)
	vm := testVM("dev", "52:54:00:00:00:01")
	vm.ImageID = "nope"
	if err := InsertVM(context.Background(), s.DB, &vm); err == nil {
		t.Fatal("insert with unknown image succeeded; foreign keys are off")
	}
}

func TestConcurrentInsertsOfOneNameExactlyOneWins(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = s.Tx(ctx, func(tx *sql.Tx) error {
				vm := testVM("race", fmt.Sprintf("52:54:00:00:01:%02x", i))
				vm.ID = fmt.Sprintf("id%d", i)
				return InsertVM(ctx, tx, &vm)
			})
		}(i)
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrExists):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d inserts won, want exactly 1", wins)
	}
}

func TestTxRollsBack(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	boom := errors.New("boom")
	err := s.Tx(ctx, func(tx *sql.Tx) error {
		vm := testVM("dev", "52:54:00:00:00:01")
		if err := InsertVM(ctx, tx, &vm); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if vms, _ := ListVMs(ctx, s.DB); len(vms) != 0 {
		t.Fatalf("rolled-back row visible: %+v", vms)
	}
}

func TestSettings(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := GetSetting(ctx, s.DB, "subnet"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	SetSetting(ctx, s.DB, "subnet", "a")
	SetSetting(ctx, s.DB, "subnet", "b")
	if v, _ := GetSetting(ctx, s.DB, "subnet"); v != "b" {
		t.Fatalf("got %q", v)
	}
}

// A vsock CID is the guest's own address (hybrid vsock: the host reaches
// each guest through its own socket), so VMs may share one: the clones of
// a template all keep the template's.
func TestVsockCIDsRepeat(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	for i, n := range []string{"a", "b"} {
		vm := testVM(n, fmt.Sprintf("52:54:00:00:00:%02x", i+1))
		vm.VsockCID = 3
		if err := InsertVM(ctx, s.DB, &vm); err != nil {
			t.Fatalf("VM %s with guest CID 3: %v", n, err)
		}
	}
	for _, n := range []string{"a", "b"} {
		if got, err := GetVM(ctx, s.DB, n); err != nil || got.VsockCID != 3 {
			t.Fatalf("cid of %s not persisted: %d, %v", n, got.VsockCID, err)
		}
	}
}

// A build's address counts as leased for VMs, and the reverse.
func TestBuildLeases(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	vm := testVM("dev", "52:54:00:00:00:01")
	if err := InsertVM(ctx, s.DB, &vm); err != nil {
		t.Fatal(err)
	}
	if err := InsertLease(ctx, s.DB, "172.30.0.2", vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := InsertBuildLease(ctx, s.DB, "172.30.0.3", "build:a"); err != nil {
		t.Fatal(err)
	}
	if err := InsertBuildLease(ctx, s.DB, "172.30.0.3", "build:b"); !errors.Is(err, ErrExists) {
		t.Fatalf("second build lease of one address: %v, want ErrExists", err)
	}
	if err := InsertBuildLease(ctx, s.DB, "172.30.0.4", "build:b"); err != nil {
		t.Fatal(err)
	}
	ips, err := LeasedIPs(ctx, s.DB)
	if err != nil || strings.Join(ips, ",") != "172.30.0.2,172.30.0.3,172.30.0.4" {
		t.Fatalf("LeasedIPs = %v, %v", ips, err)
	}
	if err := DeleteBuildLease(ctx, s.DB, "172.30.0.3"); err != nil {
		t.Fatal(err)
	}
	if n, err := DeleteBuildLeases(ctx, s.DB); n != 1 || err != nil {
		t.Fatalf("DeleteBuildLeases = %d, %v; want the one left", n, err)
	}
	if ips, _ := LeasedIPs(ctx, s.DB); strings.Join(ips, ",") != "172.30.0.2" {
		t.Fatalf("after freeing the builds': %v", ips)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewID()
		if len(id) != 12 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID() = %q, want 12 lower-case hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestSweepFolders(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"aaaaaaaaaaaa", "bbbbbbbbbbbb", "not-an-id"} {
		os.Mkdir(filepath.Join(root, d), 0o700)
	}
	os.WriteFile(filepath.Join(root, "cccccccccccc"), nil, 0o600) // a file, not a folder
	var removed []string
	err := SweepFolders(root, map[string]bool{"aaaaaaaaaaaa": true}, func(p string) error {
		removed = append(removed, p)
		return os.RemoveAll(p)
	})
	if err != nil || len(removed) != 1 || removed[0] != filepath.Join(root, "bbbbbbbbbbbb") {
		t.Fatalf("removed %v, %v; want only bbbbbbbbbbbb", removed, err)
	}
	for _, keep := range []string{"aaaaaaaaaaaa", "not-an-id", "cccccccccccc"} {
		if _, err := os.Stat(filepath.Join(root, keep)); err != nil {
			t.Errorf("%s was removed", keep)
		}
	}
	if err := SweepFolders(filepath.Join(root, "missing"), nil, os.RemoveAll); err != nil {
		t.Errorf("missing root: %v", err)
	}
}

// TestListVMsByName: the list comes ordered by name, whatever the order of
// the rows, with and without driver state.
func TestListVMsByName(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	for i, name := range []string{"mike", "alpha", "zulu", "bravo"} {
		vm := testVM(name, fmt.Sprintf("52:54:00:00:00:%02x", i+1))
		if name != "alpha" {
			vm.DriverState = `{"version":1}`
		}
		if err := InsertVM(ctx, s.DB, &vm); err != nil {
			t.Fatal(err)
		}
	}
	names := func(vms []VM) string {
		var n []string
		for _, v := range vms {
			n = append(n, v.Name)
		}
		return strings.Join(n, ",")
	}
	if vms, err := ListVMs(ctx, s.DB); err != nil || names(vms) != "alpha,bravo,mike,zulu" {
		t.Errorf("ListVMs: %s, %v", names(vms), err)
	}
	if vms, err := ListVMsWithDriverState(ctx, s.DB); err != nil || names(vms) != "bravo,mike,zulu" {
		t.Errorf("ListVMsWithDriverState: %s, %v", names(vms), err)
	}
}

func TestForwards(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	a, b := testVM("a", "52:54:00:00:00:0a"), testVM("b", "52:54:00:00:00:0b")
	for _, v := range []*VM{&a, &b} {
		if err := InsertVM(ctx, s.DB, v); err != nil {
			t.Fatal(err)
		}
	}
	f1 := Forward{VMID: a.ID, Spec: "127.0.0.1:8080:80/tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"}
	f2 := Forward{VMID: a.ID, Spec: "127.0.0.1:8080:53/udp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 53, Proto: "udp"}
	for _, f := range []*Forward{&f1, &f2} {
		if err := InsertForward(ctx, s.DB, f); err != nil {
			t.Fatal(err)
		}
	}
	// The same host side for another VM (another guest port) is taken.
	dup := Forward{VMID: b.ID, Spec: "127.0.0.1:8080:81/tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 81, Proto: "tcp"}
	if err := InsertForward(ctx, s.DB, &dup); !errors.Is(err, ErrExists) {
		t.Fatalf("a second forward of 127.0.0.1:8080/tcp: %v, want ErrExists", err)
	}
	got, err := ListForwards(ctx, s.DB, a.ID)
	if err != nil || len(got) != 2 || got[0].Spec != f1.Spec || got[1].Spec != f2.Spec || got[1].GuestPort != 53 {
		t.Fatalf("ListForwards(a) = %+v, %v", got, err)
	}
	if err := DeleteForward(ctx, s.DB, a.ID, f1.Spec); err != nil {
		t.Fatal(err)
	}
	if err := DeleteForward(ctx, s.DB, a.ID, f1.Spec); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v, want ErrNotFound", err)
	}
	// They go with their VM.
	if err := DeleteVM(ctx, s.DB, a.ID); err != nil {
		t.Fatal(err)
	}
	if all, err := ListForwards(ctx, s.DB, ""); err != nil || len(all) != 0 {
		t.Fatalf("forwards after the VM was deleted: %+v, %v", all, err)
	}
}

func TestMounts(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	a := testVM("a", "52:54:00:00:00:0a")
	if err := InsertVM(ctx, s.DB, &a); err != nil {
		t.Fatal(err)
	}
	add := func(guest string) Mount {
		t.Helper()
		m := Mount{VMID: a.ID, HostDir: "/h" + guest, GuestDir: guest}
		if err := InsertMount(ctx, s.DB, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := add("/x"); m.Index != 0 {
		t.Fatalf("first index %d", m.Index)
	}
	if m := add("/y"); m.Index != 1 {
		t.Fatalf("second index %d", m.Index)
	}
	add("/z")
	if err := InsertMount(ctx, s.DB, &Mount{VMID: a.ID, HostDir: "/other", GuestDir: "/y"}); !errors.Is(err, ErrExists) {
		t.Fatalf("a second share at /y: %v", err)
	}
	// A freed index is taken again.
	if err := DeleteMount(ctx, s.DB, a.ID, "/y"); err != nil {
		t.Fatal(err)
	}
	if m := add("/w"); m.Index != 1 {
		t.Fatalf("index after a delete: %d, want 1", m.Index)
	}
	if err := DeleteMount(ctx, s.DB, a.ID, "/y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	got, err := ListMounts(ctx, s.DB, a.ID)
	if err != nil || len(got) != 3 || got[0].GuestDir != "/x" || got[1].GuestDir != "/w" || got[2].GuestDir != "/z" {
		t.Fatalf("ListMounts: %+v %v", got, err)
	}
	DeleteVM(ctx, s.DB, a.ID)
	if got, _ := ListMounts(ctx, s.DB, a.ID); len(got) != 0 {
		t.Fatalf("mounts outlived their VM: %+v", got)
	}
}
