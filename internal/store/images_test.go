package store

import (
	"context"
	"errors"
	"testing"
)

func TestImageMetadataRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	im := Image{ID: "img9", Name: "oci", Source: "oci:debian:bookworm", Path: "/x/rootfs.ext4", SizeBytes: 1 << 30,
		KernelRelease: "6.1.0", Digest: "sha256:abc", CacheKey: "k1", BuildSeconds: 12.5, Cached: true}
	if err := InsertImage(ctx, s.DB, &im); err != nil {
		t.Fatal(err)
	}
	got, err := GetImage(ctx, s.DB, "oci")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != "sha256:abc" || got.CacheKey != "k1" || got.BuildSeconds != 12.5 || !got.Cached ||
		!got.RemovedAt.IsZero() || got.CreatedAt.IsZero() {
		t.Fatalf("got %+v", got)
	}
}

// A force-removed image that VMs still name becomes a tombstone: hidden,
// its name free, its row kept (the foreign key stays valid) until its last
// VM is gone.
func TestImageTombstone(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	seedImage(t, s)
	vm := testVM("dev", "52:54:00:00:00:01")
	if err := InsertVM(ctx, s.DB, &vm); err != nil {
		t.Fatal(err)
	}
	if err := DeleteImage(ctx, s.DB, "img1"); err == nil {
		t.Fatal("deleted an image a VM names: foreign keys are off")
	}
	if err := MarkImageRemoved(ctx, s.DB, "img1"); err != nil {
		t.Fatal(err)
	}
	if err := MarkImageRemoved(ctx, s.DB, "img1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mark removed twice: %v", err)
	}
	for _, ref := range []string{"default", "img1", "default@img1"} {
		if _, err := GetImage(ctx, s.DB, ref); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetImage(%q) of a tombstone: %v", ref, err)
		}
	}
	if ims, err := ListImages(ctx, s.DB); err != nil || len(ims) != 0 {
		t.Fatalf("ListImages shows the tombstone: %+v, %v", ims, err)
	}
	got, err := GetVM(ctx, s.DB, "dev")
	if err != nil || got.ImageID != "img1" || got.ImageName != "default@img1" {
		t.Fatalf("vm after image removal: %+v, %v", got, err)
	}
	// The name is free again.
	again := Image{ID: "img2", Name: "default", Source: "debian:trixie", Path: "/y/rootfs.ext4", SizeBytes: 1}
	if err := InsertImage(ctx, s.DB, &again); err != nil {
		t.Fatalf("reuse the name: %v", err)
	}
	// Still named by a VM: kept.
	if err := DeleteUnusedRemovedImages(ctx, s.DB); err != nil {
		t.Fatal(err)
	}
	if got, _ := GetVM(ctx, s.DB, "dev"); got.ImageName != "default@img1" {
		t.Fatalf("tombstone deleted while a VM names it: %+v", got)
	}
	if err := DeleteVM(ctx, s.DB, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := DeleteUnusedRemovedImages(ctx, s.DB); err != nil {
		t.Fatal(err)
	}
	var n int
	s.DB.QueryRow("SELECT COUNT(*) FROM images WHERE id = 'img1'").Scan(&n)
	if n != 0 {
		t.Fatal("tombstone kept after its last VM was deleted")
	}
	// Live images, used or not, are never touched.
	if _, err := GetImage(ctx, s.DB, "default"); err != nil {
		t.Fatalf("live image deleted: %v", err)
	}
}
