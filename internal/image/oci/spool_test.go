package oci

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// countingRegistry serves a registry on loopback and counts blob GETs by
// digest.
type countingRegistry struct {
	mu   sync.Mutex
	gets map[string]int
	host string
}

func newCountingRegistry(t *testing.T) *countingRegistry {
	t.Helper()
	c := &countingRegistry{gets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, dig, ok := strings.Cut(r.URL.Path, "/blobs/"); ok && r.Method == http.MethodGet {
			c.mu.Lock()
			c.gets[dig]++
			c.mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c.host = strings.TrimPrefix(srv.URL, "http://")
	return c
}

func (c *countingRegistry) count(dig string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[dig]
}

func (c *countingRegistry) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.gets)
}

func TestOpenLayerDirDownloadsEachLayerOnce(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "amd64")
	want := flattenBytes(t, img)
	reg := newCountingRegistry(t)
	ref := reg.host + "/test/spool:v1"
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, h.String())
	}
	src := Source{Kind: Registry, Ref: ref}
	flattenFrom := func(opts Options) {
		t.Helper()
		reg.reset()
		opts.Keychain = anonymous
		got, _, err := Open(ctx, src, opts)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := Flatten(got, &buf, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Error("flattened differently from the original image")
		}
	}

	flattenFrom(Options{})
	for _, d := range digests {
		if n := reg.count(d); n != 2 {
			t.Errorf("without LayerDir: layer %s fetched %d times, want 2 (one per pass)", d, n)
		}
	}

	dir := filepath.Join(t.TempDir(), "layers")
	flattenFrom(Options{LayerDir: dir})
	for _, d := range digests {
		if n := reg.count(d); n != 1 {
			t.Errorf("with LayerDir: layer %s fetched %d times, want 1", d, n)
		}
	}
	flattenFrom(Options{LayerDir: dir})
	for _, d := range digests {
		if n := reg.count(d); n != 0 {
			t.Errorf("with a filled LayerDir: layer %s fetched %d times, want 0", d, n)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(digests) {
		t.Errorf("LayerDir holds %d files, want %d", len(ents), len(digests))
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".partial-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestSpoolDropsIncompleteLayer(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "amd64")
	reg := newCountingRegistry(t)
	ref := reg.host + "/test/partial:v1"
	if err := remote.Write(mustRef(t, ref), img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	got, _, err := Open(ctx, Source{Kind: Registry, Ref: ref}, Options{Keychain: anonymous, LayerDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("a half-read layer left %d files in LayerDir", len(ents))
	}
}
