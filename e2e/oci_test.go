package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
)

// ociSources is one OCI image, made from a real root file system plus a
// second layer, offered three ways.
type ociSources struct {
	registry, layout, archive string // --from values
	digest                    string // manifest digest
	// rootfsTarball is layer one alone, gzip-compressed, for image import.
	rootfsTarball string
	images        []string
}

// The second layer's changes, checked inside the booted guests.
const (
	layerTwoFile    = "/etc/banger-layer-two"
	layerTwoContent = "added by layer two"
	// Debian's /etc/motd, removed by a whiteout.
	layerTwoDeleted = "/etc/motd"
	// /opt/app holds old-file in layer one; layer two makes it opaque and
	// adds new-file.
	opaqueOld, opaqueNew = "/opt/app/old-file", "/opt/app/new-file"
	// A setuid file owned by 1000:1000 keeps its bits and owner.
	setuidFile = "/opt/app/setuid-tool"
)

// imageShow returns `banger image show --json NAME`.
func (e *env) imageShow(ctx context.Context, name string) api.Image {
	e.t.Helper()
	var im api.Image
	if err := json.Unmarshal([]byte(e.must(ctx, "image", "show", "--json", name)), &im); err != nil {
		e.t.Fatal(err)
	}
	return im
}

// makeOCISources turns the ext4 image base into an OCI image: layer one is
// its whole tree (dumped with debugfs, owners kept) plus /opt/app/old-file;
// layer two deletes /etc/motd, makes /opt/app opaque with a new file in it,
// and adds /etc/banger-layer-two. It serves the image from a registry on
// loopback (closed when the test ends) and writes it as an OCI layout and a
// docker archive.
func makeOCISources(t *testing.T, base string) ociSources {
	t.Helper()
	dir := t.TempDir()
	l1, layerOne := debianLayer(t, base, func(tree string) {
		if _, err := os.Stat(filepath.Join(tree, strings.TrimPrefix(layerTwoDeleted, "/"))); err != nil {
			t.Fatalf("the base image has no %s for layer two to delete: %v", layerTwoDeleted, err)
		}
		os.MkdirAll(filepath.Join(tree, "opt/app"), 0o755)
		os.WriteFile(filepath.Join(tree, opaqueOld), []byte("old\n"), 0o644)
	})
	l2 := tarLayer(t, []tarEntry{
		{name: "etc/.wh.motd"},
		{name: "opt/app/", dir: true},
		{name: "opt/app/.wh..wh..opq"},
		{name: strings.TrimPrefix(opaqueNew, "/"), body: "new\n"},
		{name: strings.TrimPrefix(layerTwoFile, "/"), body: layerTwoContent + "\n"},
		{name: strings.TrimPrefix(setuidFile, "/"), body: "#!/bin/sh\n", mode: 0o4755, uid: 1000, gid: 1000},
	})
	img := withPlatform(t, appendLayers(t, l1, l2), "amd64")
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	src := ociSources{digest: h.String()}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/banger/e2e:v1"
	pushRef, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(pushRef, img); err != nil {
		t.Fatalf("push to the loopback registry: %v", err)
	}
	src.registry = "oci:" + ref

	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	src.layout = "oci-layout:" + lay + ":v1"

	arch := filepath.Join(dir, "image.tar")
	if err := tarball.WriteToFile(arch, name.MustParseReference("banger/e2e:v1"), img); err != nil {
		t.Fatal(err)
	}
	src.archive = "docker-archive:" + arch
	// Layer one again as a plain rootfs tarball (gzip) for `image import`.
	src.rootfsTarball = filepath.Join(dir, "rootfs.tar.gz")
	if out, err := exec.Command("sh", "-c", `gzip -1 -c "$1" > "$2"`, "sh", layerOne, src.rootfsTarball).CombinedOutput(); err != nil {
		t.Fatalf("gzip: %v: %s", err, out)
	}
	return src
}

// debianLayer is the whole tree of the ext4 image base (dumped with
// debugfs, owners kept), changed by edit, as one gzip layer; it also
// returns the layer's tar file (removed when the test ends).
func debianLayer(t *testing.T, base string, edit func(tree string)) (v1.Layer, string) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	if out, err := exec.Command("debugfs", "-R", "rdump / "+tree, base).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v: %s", err, out)
	}
	if edit != nil {
		edit(tree)
	}
	layer := filepath.Join(dir, "layer.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "-C", tree, "-cf", layer, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar layer: %v: %s", err, out)
	}
	os.RemoveAll(tree)
	l, err := tarball.LayerFromFile(layer, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	return l, layer
}

type tarEntry struct {
	name, body string
	dir        bool
	mode       int64 // 0644 (files) or 0755 (dirs) when 0
	uid, gid   int
}

func tarLayer(t *testing.T, entries []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
		if e.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if e.mode != 0 {
			h.Mode = e.mode
		}
		h.Uid, h.Gid = e.uid, e.gid
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendLayers(t *testing.T, ls ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func withPlatform(t *testing.T, img v1.Image, arch string) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	out, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildOCIImages builds one image from each of the three sources (forcing
// a real build each time), then rebuilds the registry one unchanged, which
// must come from the build cache. It runs outside the test's network
// namespace: the registry is on the host's loopback.
func buildOCIImages(ctx context.Context, t *testing.T, e *env, src *ociSources) {
	var first time.Duration
	for _, b := range []struct{ name, from string }{
		{"oci-registry", src.registry}, {"oci-layout", src.layout}, {"oci-archive", src.archive},
	} {
		start := time.Now()
		r := e.banger(ctx, "image", "build", b.name, "--from", b.from, "--no-cache", "--progress=plain")
		took := time.Since(start)
		if r.code != 0 {
			t.Fatalf("image build %s --from %s: exit %d\n%s\n%s\ndaemon log:\n%s", b.name, b.from, r.code, r.stdout, r.stderr, e.daemonLogTail())
		}
		t.Logf("image build %s: %s", b.name, took.Round(100*time.Millisecond))
		if first == 0 {
			first = took
			// Plain progress: phases as lines, never a line per byte.
			for _, phase := range []string{"pull", "customize", "mkfs"} {
				if !strings.Contains(r.stderr, phase) {
					t.Errorf("plain progress lacks the %s phase:\n%s", phase, r.stderr)
				}
			}
			if n := strings.Count(r.stderr, "\n"); n > 400 {
				t.Errorf("plain progress printed %d lines", n)
			}
		}
		im := e.imageShow(ctx, b.name)
		if im.Digest != src.digest || im.Cached || im.Source != b.from {
			t.Errorf("image show %s: digest %q cached %v source %q; want digest %s, not cached", b.name, im.Digest, im.Cached, im.Source, src.digest)
		}
		src.images = append(src.images, b.name)
	}
	// A root file system tarball goes through the same build; its digest
	// is the file's SHA-256.
	start := time.Now()
	e.must(ctx, "image", "import", "imported-tar", src.rootfsTarball, "--quiet")
	t.Logf("image import of a rootfs tarball: %s", time.Since(start).Round(100*time.Millisecond))
	im := e.imageShow(ctx, "imported-tar")
	sum, _ := exec.Command("sha256sum", src.rootfsTarball).Output()
	if f := strings.Fields(string(sum)); len(f) == 0 || im.Digest != "sha256:"+f[0] || !strings.HasPrefix(im.Source, "import:") {
		t.Errorf("imported tarball: digest %q source %q, want sha256 %s", im.Digest, im.Source, sum)
	}
	src.images = append(src.images, "imported-tar")

	// Unchanged inputs: the cache answers, in a small fraction of the time.
	start = time.Now()
	out := e.must(ctx, "image", "build", "oci-again", "--from", src.registry, "--quiet")
	took := time.Since(start)
	im = e.imageShow(ctx, "oci-again")
	if !im.Cached || !strings.Contains(out, "build cache") {
		t.Errorf("unchanged rebuild did not use the cache: %+v\n%s", im, out)
	}
	t.Logf("unchanged rebuild: %s (first build %s, ratio %.3f)", took.Round(time.Millisecond), first.Round(time.Second), took.Seconds()/first.Seconds())
	if took > first/10 {
		t.Errorf("cached rebuild took %s, first build %s", took, first)
	}
	e.must(ctx, "image", "rm", "oci-again")
}

// ociBadBuilds: images that cannot be made bootable fail with a clear
// message, and neither they nor an interrupted build leave anything.
func ociBadBuilds(ctx context.Context, t *testing.T, e *env, layoutSrc string) {
	dir := t.TempDir()
	write := func(file string, img v1.Image) string {
		p := filepath.Join(dir, file)
		if err := tarball.WriteToFile(p, name.MustParseReference("banger/bad:v1"), img); err != nil {
			t.Fatal(err)
		}
		return "docker-archive:" + p
	}
	etcOnly := tarLayer(t, []tarEntry{{name: "etc/", dir: true}, {name: "etc/hostname", body: "x\n"}})
	for _, tc := range []struct {
		from, want string
	}{
		{write("arm.tar", withPlatform(t, appendLayers(t, etcOnly), "arm64")), "linux/arm64"},
		{write("noshell.tar", withPlatform(t, appendLayers(t, etcOnly), "amd64")), "/bin/sh"},
		{"docker-archive:" + filepath.Join(dir, "missing.tar"), "missing.tar"},
		{"oci:127.0.0.1:1/nothing:here", "127.0.0.1:1"},
		{"ftp:whatever", "not a supported source"},
	} {
		stderr := e.fails(ctx, "image", "build", "bad", "--from", tc.from)
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("image build --from %s: stderr lacks %q:\n%s", tc.from, tc.want, stderr)
		}
	}
	assertNoImageLeaks(ctx, t, e)

	// Ctrl-C during a build: the CLI hangs up, the daemon cancels the build.
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), "image", "build", "interrupted", "--from", layoutSrc, "--no-cache", "--progress=plain")
	cmd.Env = e.environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "the build to reach the customize phase", func() bool {
		return strings.Contains(stderr.String(), "customize")
	})
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	// The daemon cleans up after the client has gone: the namespace's
	// processes die, then the half-made tree and folder are removed.
	waitFor(t, 60*time.Second, "the cancelled build to clean up", func() bool {
		return len(e.sandboxProcesses()) == 0 && len(strayImageFolders(ctx, t, e)) == 0
	})
	assertNoImageLeaks(ctx, t, e)
}

// assertNoImageLeaks: only the images the tests made exist, each with a
// folder, and no build left a folder, a temporary tree or a row.
func assertNoImageLeaks(ctx context.Context, t *testing.T, e *env) {
	t.Helper()
	var ims []api.Image
	if err := json.Unmarshal([]byte(e.must(ctx, "image", "ls", "--json")), &ims); err != nil {
		t.Fatal(err)
	}
	for _, im := range ims {
		if strings.HasPrefix(im.Name, "bad") || im.Name == "interrupted" {
			t.Errorf("a failed build left image %q", im.Name)
		}
	}
	for _, dir := range strayImageFolders(ctx, t, e) {
		sub, _ := exec.Command("find", dir, "-maxdepth", "2").Output()
		t.Errorf("image folder %s has no image:\n%s", dir, sub)
	}
	db, err := store.Open(ctx, filepath.Join(e.root, "state", "banger", "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, _ := store.ListImages(ctx, db.DB)
	if len(rows) != len(ims) {
		t.Errorf("%d image rows, %d images listed", len(rows), len(ims))
	}
}

// strayImageFolders returns the folders in the images dir that belong to no
// listed image.
func strayImageFolders(ctx context.Context, t *testing.T, e *env) []string {
	t.Helper()
	var ims []api.Image
	if err := json.Unmarshal([]byte(e.must(ctx, "image", "ls", "--json")), &ims); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, im := range ims {
		known[filepath.Dir(im.Path)] = true
	}
	imagesDir := filepath.Join(e.root, "data", "banger", "images")
	ents, _ := os.ReadDir(imagesDir)
	var out []string
	for _, ent := range ents {
		if p := filepath.Join(imagesDir, ent.Name()); !known[p] {
			out = append(out, p)
		}
	}
	return out
}

// bootOCIImages boots one VM from each OCI-built image (inside the test's
// namespace): SSH and the agent answer, and the second layer's deletions and
// additions are there.
func bootOCIImages(ctx context.Context, t *testing.T, e *env, src *ociSources) {
	check := "set -e; test ! -e " + layerTwoDeleted + "; test ! -e " + opaqueOld + "; cat " + layerTwoFile + " " + opaqueNew +
		"; test -x /usr/local/bin/banger-vsock-pingd; ls /lib/modules; stat -c 'mode=%a owner=%u:%g' " + setuidFile
	for i, imName := range src.images {
		vmName := "ocivm" + string(rune('a'+i))
		start := time.Now()
		e.must(ctx, "vm", "create", vmName, "--image", imName, "--cpus", "1", "--memory", "512")
		t.Logf("vm create from %s (to SSH + agent): %s", imName, time.Since(start).Round(100*time.Millisecond))
		if imName == "imported-tar" {
			// Layer one alone: the files layer two deletes are there.
			e.must(ctx, "vm", "ssh", "--no-remind", vmName, "--", "sh", "-c", "set -e; test -e "+layerTwoDeleted+"; test -e "+opaqueOld+"; test ! -e "+layerTwoFile)
		} else {
			out := e.must(ctx, "vm", "ssh", "--no-remind", vmName, "--", "sh", "-c", check)
			if !strings.Contains(out, layerTwoContent) || !strings.Contains(out, "new") || !strings.Contains(out, "mode=4755 owner=1000:1000") {
				t.Errorf("guest from %s does not show layer two:\n%s", imName, out)
			}
		}
		if out := e.must(ctx, "vm", "ping", vmName); !strings.Contains(out, vmName+" is alive") {
			t.Errorf("vm ping %s: %s", vmName, out)
		}
		if imName != src.images[len(src.images)-1] {
			e.must(ctx, "vm", "rm", "--force", vmName)
		}
	}
	// A VM keeps running, and its disk keeps working, when its image is
	// removed with --force: the disk is a copy.
	last, lastVM := src.images[len(src.images)-1], "ocivm"+string(rune('a'+len(src.images)-1))
	if stderr := e.fails(ctx, "image", "rm", last); !strings.Contains(stderr, lastVM) || !strings.Contains(stderr, "--force") {
		t.Errorf("image rm of an image in use: %s", stderr)
	}
	e.must(ctx, "image", "rm", "--force", last)
	e.must(ctx, "vm", "restart", lastVM)
	e.must(ctx, "vm", "ssh", "--no-remind", lastVM, "--", "true")
	e.must(ctx, "vm", "rm", "--force", lastVM)
	for _, imName := range src.images[:len(src.images)-1] {
		e.must(ctx, "image", "rm", imName)
	}
	assertNoImageLeaks(ctx, t, e)
}
