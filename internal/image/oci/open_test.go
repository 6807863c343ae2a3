package oci

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// anonymous keeps tests away from the user's Docker credentials.
var anonymous = authn.NewMultiKeychain()

func testImage(t *testing.T, arch string) v1.Image {
	return imageOf(t, arch,
		layerOf(t, dir("etc/", 0o755), file("etc/os-release", "ID=test", 0o644), file("etc/gone", "x", 0o644),
			file("bin/tool", "tool", 0o4755), hardlink("bin/alias", "bin/tool")),
		layerOf(t, whiteout("etc/.wh.gone"), file("etc/added", "added", 0o644), whiteout("bin/.wh.tool")),
	)
}

// startRegistry serves an in-memory registry on loopback and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func flattenBytes(t *testing.T, img v1.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Flatten(img, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOpenSameImageThreeWays(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "amd64")
	want := flattenBytes(t, img)
	wantDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := readTar(t, want)
	wantFile(t, m, "etc/added", "added")
	wantFile(t, m, "bin/alias", "tool")
	wantGone(t, m, "etc/gone", "bin/tool")

	// (a) a registry on loopback.
	ref := startRegistry(t) + "/test/img:v1"
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
	// (b) an OCI layout, tagged v1.
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	// (c) a docker archive.
	archive := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(archive, mustTag(t, "test/img:v1"), img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		src        string
		sameDigest bool
	}{
		{"oci:" + ref, true},
		{"oci-layout:" + dir, true},
		{"oci-layout:" + dir + ":v1", true},
		{"oci-layout:" + dir + "@" + wantDigest.String(), true},
		// docker save stores no manifest, so the digest is recomputed.
		{"docker-archive:" + archive, false},
	} {
		t.Run(tc.src, func(t *testing.T) {
			src, err := ParseSource(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			got, digest, err := Open(ctx, src, Options{Keychain: anonymous})
			if err != nil {
				t.Fatal(err)
			}
			if tc.sameDigest && digest != wantDigest.String() {
				t.Errorf("digest %s, want %s", digest, wantDigest)
			}
			if !strings.HasPrefix(digest, "sha256:") {
				t.Errorf("digest %q", digest)
			}
			if !bytes.Equal(flattenBytes(t, got), want) {
				t.Error("flattened differently from the original image")
			}
		})
	}

	t.Run("missing tag", func(t *testing.T) {
		_, _, err := Open(ctx, Source{Kind: Layout, Path: dir, Tag: "nope"}, Options{})
		if err == nil || !strings.Contains(err.Error(), `no manifest tagged "nope"`) || !strings.Contains(err.Error(), "v1") {
			t.Fatalf("err = %v, want one naming the tags present", err)
		}
	})
}

func TestOpenPicksPlatformFromIndex(t *testing.T) {
	ctx := context.Background()
	amd := testImage(t, "amd64")
	arm := testImage(t, "arm64")
	s390 := testImage(t, "s390x")
	index := func(imgs map[string]v1.Image) v1.ImageIndex {
		var adds []mutate.IndexAddendum
		for arch, img := range imgs {
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		}
		return mutate.AppendManifests(empty.Index, adds...)
	}
	host := startRegistry(t)
	multi := host + "/test/multi:latest"
	if err := remote.WriteIndex(mustRef(t, multi), index(map[string]v1.Image{"arm64": arm, "amd64": amd, "s390x": s390})); err != nil {
		t.Fatal(err)
	}
	noAmd := host + "/test/noamd:latest"
	if err := remote.WriteIndex(mustRef(t, noAmd), index(map[string]v1.Image{"arm64": arm, "s390x": s390})); err != nil {
		t.Fatal(err)
	}
	// A layout whose index.json is itself the multi-platform index.
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := layout.Write(dir, index(map[string]v1.Image{"arm64": arm, "amd64": amd})); err != nil {
		t.Fatal(err)
	}
	amdDigest, _ := amd.Digest()

	for _, src := range []Source{{Kind: Registry, Ref: multi}, {Kind: Layout, Path: dir}} {
		t.Run(src.String(), func(t *testing.T) {
			_, digest, err := Open(ctx, src, Options{Keychain: anonymous})
			if err != nil {
				t.Fatal(err)
			}
			if digest != amdDigest.String() {
				t.Errorf("picked %s, want the amd64 image %s", digest, amdDigest)
			}
		})
	}

	t.Run("layout digest inside a nested index", func(t *testing.T) {
		nested := filepath.Join(t.TempDir(), "nested")
		lp, err := layout.Write(nested, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendIndex(index(map[string]v1.Image{"arm64": arm, "amd64": amd})); err != nil {
			t.Fatal(err)
		}
		_, digest, err := Open(ctx, Source{Kind: Layout, Path: nested, Digest: amdDigest.String()}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if digest != amdDigest.String() {
			t.Errorf("got %s, want %s", digest, amdDigest)
		}
		armDigest, _ := arm.Digest()
		_, _, err = Open(ctx, Source{Kind: Layout, Path: nested, Digest: armDigest.String()}, Options{})
		if !errors.Is(err, ErrPlatform) {
			t.Errorf("selecting the arm64 manifest: err = %v, want ErrPlatform", err)
		}
		_, _, err = Open(ctx, Source{Kind: Layout, Path: nested, Digest: "sha256:" + strings.Repeat("0", 64)}, Options{})
		if err == nil || !strings.Contains(err.Error(), "no manifest sha256:000") {
			t.Errorf("unknown digest: err = %v", err)
		}
	})
	t.Run("no amd64 in index", func(t *testing.T) {
		_, _, err := Open(ctx, Source{Kind: Registry, Ref: noAmd}, Options{Keychain: anonymous})
		if !errors.Is(err, ErrPlatform) {
			t.Fatalf("err = %v, want ErrPlatform", err)
		}
		for _, s := range []string{"linux/amd64", "linux/arm64", "linux/s390x"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
	})
	t.Run("arm64 on request", func(t *testing.T) {
		_, digest, err := Open(ctx, Source{Kind: Registry, Ref: multi}, Options{Keychain: anonymous,
			Platform: v1.Platform{OS: "linux", Architecture: "arm64"}})
		if err != nil {
			t.Fatal(err)
		}
		if armDigest, _ := arm.Digest(); digest != armDigest.String() {
			t.Errorf("picked %s, want arm64 %s", digest, armDigest)
		}
	})
}

func TestOpenWrongArchitecture(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "arm64")
	archive := filepath.Join(t.TempDir(), "arm.tar")
	if err := tarball.WriteToFile(archive, mustTag(t, "test/arm:v1"), img); err != nil {
		t.Fatal(err)
	}
	ref := startRegistry(t) + "/test/arm:v1"
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
	for _, src := range []Source{{Kind: DockerArchive, Path: archive}, {Kind: Registry, Ref: ref}} {
		t.Run(string(src.Kind), func(t *testing.T) {
			_, _, err := Open(ctx, src, Options{Keychain: anonymous})
			if !errors.Is(err, ErrPlatform) {
				t.Fatalf("err = %v, want ErrPlatform", err)
			}
			if !strings.Contains(err.Error(), "want linux/amd64, the image is linux/arm64") {
				t.Errorf("error %q does not say both platforms", err)
			}
		})
	}
}

func TestOpenMissingFiles(t *testing.T) {
	ctx := context.Background()
	for _, src := range []Source{
		{Kind: Layout, Path: filepath.Join(t.TempDir(), "none")},
		{Kind: DockerArchive, Path: filepath.Join(t.TempDir(), "none.tar")},
	} {
		_, _, err := Open(ctx, src, Options{})
		if err == nil || !strings.Contains(err.Error(), src.String()) {
			t.Errorf("Open(%s) = %v, want an error naming the source", src, err)
		}
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}
