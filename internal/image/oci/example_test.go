package oci_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerhq/banger/internal/image/oci"
)

// Example shows how an image build turns --from into the root file system
// tarball that the Debian path's fakeroot extract + mkfs.ext4 -d consumes.
func Example() {
	build := func(ctx context.Context, from, work string) (tarball, digest string, err error) {
		src, err := oci.ParseSource(from)
		if err != nil {
			return "", "", err
		}
		img, digest, err := oci.Open(ctx, src, oci.Options{LayerDir: filepath.Join(work, "layers")})
		if err != nil {
			return "", "", err
		}
		tarball = filepath.Join(work, "rootfs.tar")
		f, err := os.Create(tarball)
		if err != nil {
			return "", "", err
		}
		err = oci.FlattenContext(ctx, img, f, func(e oci.Event) {
			if e.Done {
				fmt.Fprintf(os.Stderr, "%s layer %d/%d: %d bytes\n", e.Phase, e.Layer, e.Layers, e.Bytes)
			}
		})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return tarball, digest, err
	}
	_ = build
	_, err := oci.ParseSource("docker:debian")
	fmt.Println(err)
	// Output: invalid image source "docker:debian": unknown kind "docker"; want oci:REF, oci-layout:DIR[:TAG|@DIGEST] or docker-archive:FILE
}
