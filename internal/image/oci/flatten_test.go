package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/testhost"
)

var mtime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// ent is one entry of a hand-made layer.
type ent struct {
	hdr  tar.Header
	body string
}

func dir(name string, mode int64) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime}}
}

func file(name, body string, mode int64) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: mtime}, body: body}
}

func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: mtime}}
}

func whiteout(name string) ent { return file(name, "", 0o644) }

func layerOf(t *testing.T, entries ...ent) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("layer entry %s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf stacks layers (first is lowest) into a linux/arch image.
func imageOf(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type outEntry struct {
	hdr  *tar.Header
	body string
}

// flat flattens img and returns the entries by name, and their order.
func flat(t *testing.T, img v1.Image) (map[string]outEntry, []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := Flatten(img, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return readTar(t, buf.Bytes())
}

func readTar(t *testing.T, b []byte) (map[string]outEntry, []string) {
	t.Helper()
	m := map[string]outEntry{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := m[h.Name]; dup {
			t.Errorf("%s written twice", h.Name)
		}
		m[h.Name] = outEntry{h, string(body)}
		order = append(order, h.Name)
	}
	return m, order
}

func wantFile(t *testing.T, m map[string]outEntry, name, body string) {
	t.Helper()
	e, ok := m[name]
	switch {
	case !ok:
		t.Errorf("%s missing", name)
	case e.hdr.Typeflag != tar.TypeReg:
		t.Errorf("%s: type %q, want a regular file", name, e.hdr.Typeflag)
	case e.body != body:
		t.Errorf("%s = %q, want %q", name, e.body, body)
	}
}

func wantLink(t *testing.T, m map[string]outEntry, name, target string) {
	t.Helper()
	e, ok := m[name]
	switch {
	case !ok:
		t.Errorf("%s missing", name)
	case e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != target:
		t.Errorf("%s: type %q -> %q, want hard link to %s", name, e.hdr.Typeflag, e.hdr.Linkname, target)
	}
}

func wantDir(t *testing.T, m map[string]outEntry, name string, mode int64) {
	t.Helper()
	e, ok := m[name]
	switch {
	case !ok:
		t.Errorf("%s missing", name)
	case e.hdr.Typeflag != tar.TypeDir:
		t.Errorf("%s: type %q, want a directory", name, e.hdr.Typeflag)
	case e.hdr.Mode != mode:
		t.Errorf("%s: mode %o, want %o", name, e.hdr.Mode, mode)
	}
}

func wantGone(t *testing.T, m map[string]outEntry, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := m[n]; ok {
			t.Errorf("%s present, want it deleted", n)
		}
	}
}

func TestFlattenWhiteoutsAndLayerOrder(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, dir("etc/", 0o755), file("etc/a", "one", 0o644), file("etc/b", "b", 0o644),
			dir("usr/", 0o755), dir("usr/bin/", 0o755), file("usr/bin/x", "x", 0o755), file("keep", "k", 0o600)),
		layerOf(t, file("etc/a", "two", 0o640), whiteout("etc/.wh.b"), whiteout("usr/.wh.bin"),
			whiteout(".wh.nothing-there"), file("new", "n", 0o644)),
		layerOf(t, file("etc/a", "three", 0o600)),
	)
	m, _ := flat(t, img)
	wantFile(t, m, "etc/a", "three")
	if m["etc/a"].hdr.Mode != 0o600 {
		t.Errorf("etc/a mode %o, want 600 from the top layer", m["etc/a"].hdr.Mode)
	}
	wantFile(t, m, "keep", "k")
	wantFile(t, m, "new", "n")
	wantDir(t, m, "usr/", 0o755)
	wantGone(t, m, "etc/b", "usr/bin/", "usr/bin/x", ".wh.nothing-there", "etc/.wh.b")
	for name := range m {
		if strings.Contains(name, ".wh.") {
			t.Errorf("whiteout %s written", name)
		}
	}
}

func TestFlattenWhiteoutOnlyHidesLowerLayers(t *testing.T) {
	// The spec: a whiteout does not hide a path its own layer adds, wherever
	// it stands in the tar.
	img := imageOf(t, "amd64",
		layerOf(t, file("f", "old", 0o644)),
		layerOf(t, file("f", "new", 0o644), whiteout(".wh.f")),
	)
	m, _ := flat(t, img)
	wantFile(t, m, "f", "new")
}

func TestFlattenOpaqueDirectory(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, dir("d/", 0o755), file("d/x", "x", 0o644), dir("d/sub/", 0o755), file("d/sub/y", "y", 0o644),
			dir("other/", 0o755), file("other/z", "z", 0o644)),
		layerOf(t, dir("d/", 0o700), whiteout("d/.wh..wh..opq"), file("d/new", "n", 0o644)),
	)
	m, _ := flat(t, img)
	wantDir(t, m, "d/", 0o700)
	wantFile(t, m, "d/new", "n")
	wantFile(t, m, "other/z", "z")
	wantGone(t, m, "d/x", "d/sub/", "d/sub/y", "d/.wh..wh..opq")
}

func TestFlattenFileToDirAndBack(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, file("p", "file1", 0o644), dir("q/", 0o755), file("q/inner", "i", 0o644)),
		layerOf(t, dir("p/", 0o751), file("p/child", "c", 0o644), file("q", "now a file", 0o644)),
	)
	m, _ := flat(t, img)
	wantDir(t, m, "p/", 0o751)
	wantFile(t, m, "p/child", "c")
	wantFile(t, m, "q", "now a file")
	wantGone(t, m, "p", "q/", "q/inner")

	img = imageOf(t, "amd64",
		layerOf(t, file("p", "file1", 0o644), dir("q/", 0o755), file("q/inner", "i", 0o644)),
		layerOf(t, dir("p/", 0o751), file("p/child", "c", 0o644), file("q", "now a file", 0o644)),
		layerOf(t, file("p", "file again", 0o644), dir("q/", 0o700), file("q/fresh", "f", 0o644)),
	)
	m, _ = flat(t, img)
	wantFile(t, m, "p", "file again")
	wantDir(t, m, "q/", 0o700)
	wantFile(t, m, "q/fresh", "f")
	wantGone(t, m, "p/", "p/child", "q", "q/inner")
}

func TestFlattenImplicitParent(t *testing.T) {
	// A layer whose entry sits under a lower non-directory, with no
	// directory entry of its own: the parent becomes a directory.
	img := imageOf(t, "amd64",
		layerOf(t, file("a", "file", 0o644)),
		layerOf(t, file("a/b/c", "deep", 0o644)),
	)
	m, order := flat(t, img)
	wantDir(t, m, "a/", 0o755)
	wantDir(t, m, "a/b/", 0o755)
	wantFile(t, m, "a/b/c", "deep")
	if strings.Join(order, " ") != "a/ a/b/ a/b/c" {
		t.Errorf("order %q", order)
	}
}

func TestFlattenHardLinks(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, dir("bin/", 0o755),
			file("bin/orig", "shared", 0o4755), hardlink("bin/l1", "bin/orig"), hardlink("bin/l2", "bin/l1"),
			file("g", "old", 0o644), hardlink("h", "g"),
			file("kept", "kept", 0o644), hardlink("kept2", "kept"),
		),
		layerOf(t,
			// The target of two links goes: the first survivor takes the
			// content, the other links to it.
			whiteout("bin/.wh.orig"),
			// g is replaced: h keeps the old content and is no longer a link.
			file("g", "new", 0o644),
			// A link across layers.
			hardlink("cross", "kept"),
		),
	)
	m, order := flat(t, img)
	wantGone(t, m, "bin/orig")
	wantFile(t, m, "bin/l1", "shared")
	if m["bin/l1"].hdr.Mode != 0o4755 {
		t.Errorf("bin/l1 mode %o, want 4755 (the inode's)", m["bin/l1"].hdr.Mode)
	}
	wantLink(t, m, "bin/l2", "bin/l1")
	wantFile(t, m, "g", "new")
	wantFile(t, m, "h", "old")
	wantFile(t, m, "cross", "kept")
	wantLink(t, m, "kept", "cross")
	wantLink(t, m, "kept2", "cross")
	// Every link comes after the entry it names.
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	for n, e := range m {
		if e.hdr.Typeflag == tar.TypeLink && pos[e.hdr.Linkname] > pos[n] {
			t.Errorf("%s written before its target %s", n, e.hdr.Linkname)
		}
	}
}

func TestFlattenHardLinkToMissingTarget(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, file("a", "a", 0o644)),
		layerOf(t, hardlink("b", "nowhere")),
	)
	err := Flatten(img, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "layer 2 of 2") || !strings.Contains(err.Error(), "target nowhere does not exist") {
		t.Fatalf("err = %v, want a missing-target error naming layer 2", err)
	}
	img = imageOf(t, "amd64", layerOf(t, dir("d/", 0o755), hardlink("x", "d")))
	if err := Flatten(img, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err = %v, want a link-to-directory error", err)
	}
}

func TestFlattenHardLinkToWhatItsOwnLayerHides(t *testing.T) {
	// A layer may link to a lower file and white it out (tar order decides
	// what an extractor sees first); the link keeps the content.
	img := imageOf(t, "amd64",
		layerOf(t, file("a", "from a", 0o644), dir("d/", 0o755), file("d/x", "from d/x", 0o644),
			dir("o/", 0o755), file("o/y", "from o/y", 0o600)),
		layerOf(t, whiteout(".wh.a"), hardlink("b", "a"),
			whiteout(".wh.d"), hardlink("c", "d/x"),
			whiteout("o/.wh..wh..opq"), hardlink("o/z", "o/y")),
	)
	m, _ := flat(t, img)
	wantFile(t, m, "b", "from a")
	wantFile(t, m, "c", "from d/x")
	wantFile(t, m, "o/z", "from o/y")
	wantGone(t, m, "a", "d/", "d/x", "o/y")
}

func TestFlattenKeepsMetadata(t *testing.T) {
	capability := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	special := []ent{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/vda", Mode: 0o660, Gid: 6, Devmajor: 254, Devminor: 0, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "srv/", Mode: 0o2775, Uid: 1000, Gid: 1000, Uname: "dev", Gname: "dev", ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "su", Mode: 0o4755, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "ping", Mode: 0o755, Size: 4, ModTime: mtime,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capability, "SCHILY.xattr.user.note": "hi"}}, body: "ping"},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "lib", Linkname: "usr/lib", Mode: 0o777, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: "/etc/passwd", Mode: 0o777, ModTime: mtime}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "precise", Mode: 0o644, ModTime: mtime.Add(987654321), Format: tar.FormatPAX}},
	}
	img := imageOf(t, "amd64", layerOf(t, special...), layerOf(t, file("other", "o", 0o644)))
	m, _ := flat(t, img)
	for _, e := range special {
		got, ok := m[e.hdr.Name]
		if !ok {
			t.Errorf("%s missing", e.hdr.Name)
			continue
		}
		g, w := got.hdr, e.hdr
		if g.Typeflag != w.Typeflag || g.Mode != w.Mode || g.Uid != w.Uid || g.Gid != w.Gid ||
			g.Uname != w.Uname || g.Gname != w.Gname || g.Linkname != w.Linkname ||
			g.Devmajor != w.Devmajor || g.Devminor != w.Devminor || !g.ModTime.Equal(w.ModTime) {
			t.Errorf("%s: got %+v\nwant %+v", w.Name, g, w)
		}
		for k, v := range w.PAXRecords {
			if g.PAXRecords[k] != v {
				t.Errorf("%s: PAX %s = %q, want %q", w.Name, k, g.PAXRecords[k], v)
			}
		}
		if got.body != e.body {
			t.Errorf("%s: body %q, want %q", w.Name, got.body, e.body)
		}
	}
}

func TestFlattenRootAndDotSlashNames(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, dir("./", 0o755), dir("./etc/", 0o755), file("./etc/hostname", "h", 0o644), file("/abs", "a", 0o644),
			file("../../escape", "e", 0o644)),
	)
	m, order := flat(t, img)
	if order[0] != "./" {
		t.Errorf("first entry %q, want ./", order[0])
	}
	wantFile(t, m, "etc/hostname", "h")
	wantFile(t, m, "abs", "a")
	wantFile(t, m, "escape", "e")
}

func TestFlattenProgress(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t, file("a", strings.Repeat("x", 5<<20), 0o644)),
		layerOf(t, file("b", "b", 0o644)),
	)
	var evs []Event
	if err := Flatten(img, io.Discard, func(e Event) { evs = append(evs, e) }); err != nil {
		t.Fatal(err)
	}
	type key struct {
		p Phase
		l int
	}
	done := map[key]Event{}
	for _, e := range evs {
		if e.Layers != 2 || e.Layer < 1 || e.Layer > 2 {
			t.Errorf("bad event %+v", e)
		}
		if e.Done {
			done[key{e.Phase, e.Layer}] = e
		}
	}
	for _, k := range []key{{PhaseScan, 1}, {PhaseScan, 2}, {PhaseWrite, 1}, {PhaseWrite, 2}} {
		if _, ok := done[k]; !ok {
			t.Errorf("no Done event for %v", k)
		}
	}
	if b := done[key{PhaseScan, 1}].Bytes; b < 5<<20 {
		t.Errorf("layer 1 scan read %d bytes, want >= 5 MiB", b)
	}
}

func TestFlattenBadWhiteout(t *testing.T) {
	img := imageOf(t, "amd64", layerOf(t, whiteout("d/.wh.")))
	if err := Flatten(img, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "invalid whiteout") {
		t.Fatalf("err = %v", err)
	}
}

func TestFlattenContextCancelled(t *testing.T) {
	img := imageOf(t, "amd64", layerOf(t, file("a", "a", 0o644)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := FlattenContext(ctx, img, io.Discard, tarlimit.Limits{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestFlattenHardLinksMore(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t,
			dir("d/", 0o755), file("d/f", "in d", 0o644), hardlink("x", "d/f"),
			ent{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p1", Mode: 0o600, ModTime: mtime}},
			hardlink("p2", "p1"),
			ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "s1", Linkname: "target", Mode: 0o777, ModTime: mtime}},
			hardlink("s2", "s1"),
		),
		// d becomes a file: d/f goes, x keeps its content.
		layerOf(t, file("d", "now a file", 0o644), whiteout(".wh.p1")),
	)
	m, order := flat(t, img)
	wantFile(t, m, "d", "now a file")
	wantFile(t, m, "x", "in d")
	wantGone(t, m, "d/", "d/f", "p1")
	if e := m["p2"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeFifo {
		t.Errorf("p2 should be the fifo itself, got %+v", e.hdr)
	}
	if e := m["s1"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "target" {
		t.Errorf("s1: %+v", e.hdr)
	}
	wantLink(t, m, "s2", "s1")
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if pos["s2"] < pos["s1"] {
		t.Error("s2 written before s1")
	}
}

// rawLayer is a layer whose uncompressed tar is b, gzip-compressed.
func rawLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestFlattenLimits: a layer over the limits fails in the first pass,
// quickly, before anything is written.
func TestFlattenLimits(t *testing.T) {
	sparse := append(testhost.SparseTar("huge", 1<<40), make([]byte, 1024)...)
	zeros := layerOf(t, file("zeros", strings.Repeat("\x00", 8<<20), 0o644))
	for _, tc := range []struct {
		name  string
		layer v1.Layer
		lim   tarlimit.Limits
		want  string
	}{
		{"a 1 TiB sparse file in a small layer", rawLayer(t, sparse), tarlimit.Limits{MaxBytes: 32 << 30}, `"/huge" alone is 1 TiB`},
		{"more content than max_size", zeros, tarlimit.Limits{MaxBytes: 1 << 20}, `"/zeros" alone is 8 MiB`},
		{"more entries than max_files", layerOf(t, dir("a/", 0o755), dir("b/", 0o755), dir("c/", 0o755)), tarlimit.Limits{MaxFiles: 2}, "more than 2 files"},
		// A stream longer than its entries say (a bomb of padding).
		{"more bytes than max_size", rawLayer(t, append(sparse[:0:0], make([]byte, 4<<20)...)), tarlimit.Limits{MaxBytes: 1 << 20, MaxFiles: 1}, "gave more than 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			start := time.Now()
			err := FlattenContext(context.Background(), imageOf(t, "amd64", tc.layer), &out, tc.lim, nil)
			if !errors.Is(err, tarlimit.ErrTooLarge) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrTooLarge saying %q", err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written before the refusal", out.Len())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}
