package vm

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/testhost"
)

// sharingDriver is the sleepDriver test double with virtio-fs, as QEMU has.
type sharingDriver struct{ *sleepDriver }

func (sharingDriver) SharesFolders() bool { return true }

// TestMountStoppedVM: vm mount adds, lists and removes a stopped VM's
// shared folders, kept in the store; bad folders, overlapping and repeated
// guest folders, and a VMM without virtio-fs are refused with what to do,
// and leave nothing.
func TestMountStoppedVM(t *testing.T) {
	if err := mounts.CheckVirtiofsd(); err != nil {
		testhost.Skip(t, "%v", err)
	}
	s := newSleepService(t, &sleepDriver{})
	s.drivers["sleep"] = sharingDriver{&sleepDriver{}}
	addVM(t, s, "dev", "stopped")
	ctx := context.Background()
	dir := t.TempDir()
	mount := func(spec string, remove bool) (api.VM, error) {
		return s.Mount(ctx, api.VMMountParams{Name: "dev", Spec: spec, Remove: remove})
	}
	v, err := mount(dir+":/src", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Mounts) != 1 || v.Mounts[0].Spec != dir+":/src" {
		t.Fatalf("mounts after vm mount: %+v", v.Mounts)
	}
	if v, err = mount(dir+":/data:ro", false); err != nil || len(v.Mounts) != 2 || !v.Mounts[1].ReadOnly {
		t.Fatalf("a second, read-only share: %+v, %v", v.Mounts, err)
	}
	for _, tc := range []struct {
		spec string
		kind error
		want string
	}{
		{dir + ":/src", api.ErrInvalid, "overlap"},
		{dir + ":/src/sub", api.ErrInvalid, "/src"},
		{filepath.Join(dir, "missing") + ":/m", api.ErrInvalid, "no such file"},
		{dir + ":/etc", api.ErrInvalid, "/etc"},
	} {
		if _, err := mount(tc.spec, false); err == nil || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("vm mount dev %s: %v, want a %v error with %q", tc.spec, err, tc.kind, tc.want)
		}
	}
	if v, err = mount("/src", true); err != nil || len(v.Mounts) != 1 || v.Mounts[0].GuestDir != "/data" {
		t.Fatalf("vm mount --rm dev /src: %+v, %v", v.Mounts, err)
	}
	if _, err := mount("/src", true); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("removing a removed share: %v, want not found", err)
	}

	// A VMM without virtio-fs (Firecracker) refuses shares.
	plain := newSleepService(t, &sleepDriver{})
	addVM(t, plain, "fc", "stopped")
	if _, err := plain.Mount(ctx, api.VMMountParams{Name: "fc", Spec: dir + ":/src"}); err == nil || !strings.Contains(err.Error(), "no virtio-fs") {
		t.Errorf("vm mount on a VMM without virtio-fs: %v", err)
	}
	if v, _ := plain.Get(ctx, "fc"); len(v.Mounts) != 0 {
		t.Errorf("the refused share was kept: %+v", v.Mounts)
	}
}
