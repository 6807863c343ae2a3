package oci_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/image/tarlimit"
)

// Example shows how an image build turns --from into the root file system
// tarball that image.BuildRootfs consumes (one tar stream, as for Debian).
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
		err = oci.FlattenContext(ctx, img, f, tarlimit.Limits{}, func(e oci.Event) {
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
