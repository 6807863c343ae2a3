package oci

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangerhq/banger/internal/image/tarlimit"
)

// Whiteout names of the OCI image layer specification.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Phase names the pass of Flatten an Event belongs to.
type Phase string

// Flatten reads every layer twice: once for headers, once for contents.
const (
	PhaseScan  Phase = "scan"
	PhaseWrite Phase = "write"
)

// Event reports Flatten's progress through one layer.
type Event struct {
	Phase Phase
	// Layer counts from 1 to Layers.
	Layer, Layers int
	// Bytes is how much of the layer's uncompressed tar has been read.
	Bytes int64
	// Size is the layer's compressed size as the manifest states it (the
	// uncompressed size is not known in advance).
	Size int64
	// Done is set on the layer's last event.
	Done bool
}

// progressEvery is how many bytes pass between two progress events.
const progressEvery = 4 << 20

// Flatten is FlattenContext without cancellation or limits.
func Flatten(img v1.Image, w io.Writer, progress func(Event)) error {
	return FlattenContext(context.Background(), img, w, tarlimit.Limits{}, progress)
}

// FlattenContext writes to w one tar stream holding img's final root file
// system: its layers applied in order as an OCI runtime would, with
// whiteouts (".wh.NAME" removes NAME of lower layers) and opaque
// directories (".wh..wh..opq" hides what lower layers put in the
// directory). A later layer may replace a file by a directory or the
// reverse. Paths are taken literally: an entry whose parent is a
// non-directory in the tree so far replaces that parent with a directory
// (mode 0755, root), as overlayfs would show it; entries never escape the
// root (".." is cleaned away).
//
// Every entry keeps its type, owner (numeric ids and names), mode bits
// including setuid, setgid and sticky, modification time (to the
// nanosecond, when the layer has it), symlink target,
// device numbers and extended attributes (SCHILY.xattr.* and
// LIBARCHIVE.xattr.* PAX records, such as security.capability). Names are
// relative ("etc/passwd", directories end in "/"); a root entry "./" is
// written only when a layer has one.
//
// Hard links are kept as links among the final paths that share an inode.
// When a link's target was later deleted or replaced, the first surviving
// path (in tree order) carries the content and the others link to it. A
// link's target is resolved when the link is applied: among the paths of
// the tree so far, or else among what the link's own layer whites out
// (tar order decides what an extractor would still see). A target found
// in neither, or a directory, is an error.
//
// The stream holds, in order: every directory, symlink, device and fifo in
// tree order (parents first); then regular files in layer order; then hard
// links to regular files. Memory grows with the number of paths, not with
// their contents: each layer is read twice (PhaseScan, then PhaseWrite), so
// for a registry image each layer is fetched twice unless the layers are
// cached locally; a layer with nothing left to copy is not read again.
// progress, when not nil, is called from this goroutine.
// ctx is checked between entries.
//
// The first pass counts every layer's entries and content against lim
// (sparse files at their full size) and the uncompressed bytes it reads:
// a layer over them (a 1 TiB sparse file in a few hundred bytes, a
// decompression bomb, a stream without end) fails before anything is
// written to w.
func FlattenContext(ctx context.Context, img v1.Image, w io.Writer, lim tarlimit.Limits, progress func(Event)) error {
	if progress == nil {
		progress = func(Event) {}
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("flatten: list layers: %w", err)
	}
	t := newTree()
	count := &tarlimit.Counter{Limits: lim}
	for i, l := range layers {
		if err := readLayer(ctx, l, PhaseScan, i, len(layers), progress, count, func(n int, hdr *tar.Header, _ io.Reader) error {
			if err := count.Add(hdr); err != nil {
				return err
			}
			return t.add(i, n, hdr)
		}, t.endLayer); err != nil {
			return fmt.Errorf("flatten: layer %d of %d: %w", i+1, len(layers), err)
		}
	}

	plan := t.plan()
	tw := tar.NewWriter(w)
	for _, e := range plan.early {
		if err := tw.WriteHeader(e); err != nil {
			return fmt.Errorf("flatten: write %s: %w", e.Name, err)
		}
	}
	for i, l := range layers {
		if i >= len(plan.content) || len(plan.content[i]) == 0 {
			continue // nothing of this layer survives with content
		}
		want := plan.content[i]
		left := len(want)
		if err := readLayer(ctx, l, PhaseWrite, i, len(layers), progress, nil, func(n int, hdr *tar.Header, r io.Reader) error {
			if left == 0 {
				return errStop // the rest of the layer was checked in the first pass
			}
			ino, ok := want[n]
			if !ok {
				return nil
			}
			left--
			if clean(hdr.Name) != ino.srcName || hdr.Size != ino.hdr.Size {
				return fmt.Errorf("entry %d changed between reads (%s, then %s): the layer is not stable", n, ino.srcName, hdr.Name)
			}
			out := outHeader(ino.hdr, ino.paths[0], false)
			if err := tw.WriteHeader(out); err != nil {
				return fmt.Errorf("write %s: %w", out.Name, err)
			}
			if _, err := io.Copy(tw, r); err != nil {
				return fmt.Errorf("copy %s: %w", out.Name, err)
			}
			return nil
		}, nil); err != nil {
			return fmt.Errorf("flatten: layer %d of %d: %w", i+1, len(layers), err)
		}
	}
	for _, e := range plan.late {
		if err := tw.WriteHeader(e); err != nil {
			return fmt.Errorf("flatten: write %s: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("flatten: finish tar: %w", err)
	}
	return nil
}

// errStop, returned by readLayer's each, ends the layer early (no end call).
var errStop = errors.New("stop reading the layer")

// readLayer calls each for every entry of l's uncompressed tar, then end
// (when not nil), reporting progress. It reads the stream to its end so
// that compressed readers verify their digests, unless each returns
// errStop. With count, the bytes read count against its limits.
func readLayer(ctx context.Context, l v1.Layer, phase Phase, i, n int, progress func(Event), count *tarlimit.Counter,
	each func(int, *tar.Header, io.Reader) error, end func() error) error {
	size, _ := l.Size()
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	cr := &countingReader{r: rc, report: func(b int64, done bool) {
		progress(Event{Phase: phase, Layer: i + 1, Layers: n, Bytes: b, Size: size, Done: done})
	}}
	cr.report(0, false)
	var r io.Reader = cr
	if count != nil {
		r = count.Reader(cr, fmt.Sprintf("layer %d", i+1))
	}
	tr := tar.NewReader(r)
	for k := 0; ; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := each(k, hdr, tr); errors.Is(err, errStop) {
			cr.report(cr.n, true)
			return nil
		} else if err != nil {
			return err
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read to end: %w", err)
	}
	if err := rc.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	cr.report(cr.n, true)
	if end != nil {
		return end()
	}
	return nil
}

type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64, bool)
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	if c.n-c.last >= progressEvery {
		c.last = c.n
		c.report(c.n, false)
	}
	return k, err
}

// clean maps a tar name to a slash-separated path relative to the root,
// "." for the root itself, never escaping it.
func clean(name string) string {
	p := path.Clean("/" + name)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// inode is a non-directory: the entry that made it, and the final paths
// that name it.
type inode struct {
	hdr     *tar.Header
	layer   int
	index   int
	srcName string
	paths   []string
}

type node struct {
	dir      bool
	hdr      *tar.Header // a directory's header; nil when implicit
	children map[string]*node
	ino      *inode // non-directories
}

func newDir(hdr *tar.Header) *node {
	return &node{dir: true, hdr: hdr, children: map[string]*node{}}
}

// tree is the file system as applied so far; pending holds the entries of
// the layer being read, applied by endLayer after its whiteouts because
// whiteouts act only on lower layers.
type tree struct {
	root      *node
	whiteouts []string
	opaques   []string
	pending   []pendingEntry
}

type pendingEntry struct {
	layer, index int
	name         string
	hdr          *tar.Header
}

func newTree() *tree { return &tree{root: newDir(nil)} }

func (t *tree) add(layer, index int, hdr *tar.Header) error {
	name := clean(hdr.Name)
	base := path.Base(name)
	switch {
	case base == opaqueMarker:
		t.opaques = append(t.opaques, path.Dir(name))
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		// Other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(path.Dir(name), base[len(whiteoutPrefix):])
		if base == whiteoutPrefix || clean(target) != target || target == "." {
			return fmt.Errorf("invalid whiteout %q", hdr.Name)
		}
		t.whiteouts = append(t.whiteouts, target)
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // consumed by archive/tar; never seen here
	default:
		return fmt.Errorf("%s: unsupported tar entry type %q", hdr.Name, hdr.Typeflag)
	}
	keep := *hdr
	keep.PAXRecords = xattrRecords(hdr.PAXRecords)
	keep.Xattrs = nil
	t.pending = append(t.pending, pendingEntry{layer: layer, index: index, name: name, hdr: &keep})
	return nil
}

// endLayer applies the layer read since the last call: whiteouts and opaque
// markers against the lower layers first, then its entries in order.
func (t *tree) endLayer() error {
	// What this layer's whiteouts hide stays reachable as a hard link
	// target for this layer's entries: extracting the layer in tar order
	// could link to it before its whiteout entry removes it.
	hidden := map[string]*node{}
	for _, p := range t.whiteouts {
		if parent, base := t.lookupParent(p); parent != nil {
			if n := parent.children[base]; n != nil {
				hidden[p] = n
				delete(parent.children, base)
			}
		}
	}
	for _, p := range t.opaques {
		dir := t.mkdirAll(p)
		for name, n := range dir.children {
			hidden[path.Join(p, name)] = n
		}
		clear(dir.children)
	}
	pending := t.pending
	t.whiteouts, t.opaques, t.pending = nil, nil, nil
	for _, e := range pending {
		if err := t.apply(e, hidden); err != nil {
			return err
		}
	}
	return nil
}

// lookupHidden finds p among the subtrees hidden holds.
func lookupHidden(hidden map[string]*node, p string) *node {
	for dir, rest := p, ""; ; {
		if n := hidden[dir]; n != nil {
			for _, el := range strings.Split(rest, "/") {
				if el == "" {
					continue
				}
				if !n.dir || n.children[el] == nil {
					return nil
				}
				n = n.children[el]
			}
			return n
		}
		i := strings.LastIndex(dir, "/")
		if i < 0 {
			return nil
		}
		dir, rest = dir[:i], dir[i+1:]+"/"+rest
	}
}

func (t *tree) apply(e pendingEntry, hidden map[string]*node) error {
	if e.name == "." {
		if e.hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("root entry %q is not a directory", e.hdr.Name)
		}
		t.root.hdr = e.hdr
		return nil
	}
	parent := t.mkdirAll(path.Dir(e.name))
	base := path.Base(e.name)
	old := parent.children[base]
	switch e.hdr.Typeflag {
	case tar.TypeDir:
		if old != nil && old.dir {
			// A directory over a directory updates its metadata and keeps
			// what lower layers put inside.
			old.hdr = e.hdr
			return nil
		}
		parent.children[base] = newDir(e.hdr)
	case tar.TypeLink:
		target := clean(e.hdr.Linkname)
		if target == e.name && old != nil && !old.dir {
			return nil // a link to itself changes nothing
		}
		tn := t.lookup(target)
		if tn == nil {
			tn = lookupHidden(hidden, target)
		}
		switch {
		case tn == nil:
			return fmt.Errorf("hard link %s: target %s does not exist", e.name, target)
		case tn.dir:
			return fmt.Errorf("hard link %s: target %s is a directory", e.name, target)
		}
		parent.children[base] = &node{ino: tn.ino}
	default:
		parent.children[base] = &node{ino: &inode{hdr: e.hdr, layer: e.layer, index: e.index, srcName: e.name}}
	}
	return nil
}

// lookup returns the node at p, or nil.
func (t *tree) lookup(p string) *node {
	if p == "." {
		return t.root
	}
	parent, base := t.lookupParent(p)
	if parent == nil {
		return nil
	}
	return parent.children[base]
}

// lookupParent returns the directory holding p and p's last element, or nil
// when that directory does not exist.
func (t *tree) lookupParent(p string) (*node, string) {
	n := t.root
	dir, base := path.Split(p)
	for _, el := range strings.Split(strings.TrimSuffix(dir, "/"), "/") {
		if el == "" {
			continue
		}
		c := n.children[el]
		if c == nil || !c.dir {
			return nil, ""
		}
		n = c
	}
	return n, base
}

// mkdirAll returns the directory at p, creating it and its parents as
// implicit directories and replacing non-directories on the way.
func (t *tree) mkdirAll(p string) *node {
	n := t.root
	if p == "." {
		return n
	}
	for _, el := range strings.Split(p, "/") {
		c := n.children[el]
		if c == nil || !c.dir {
			c = newDir(nil)
			n.children[el] = c
		}
		n = c
	}
	return n
}

// flattenPlan is what the second pass writes.
type flattenPlan struct {
	early   []*tar.Header    // directories and content-less entries, tree order
	content []map[int]*inode // per layer: entry index -> regular file to copy
	late    []*tar.Header    // hard links to regular files
}

func (t *tree) plan() flattenPlan {
	type item struct {
		name string
		n    *node
	}
	var order []item
	var walk func(prefix string, n *node)
	walk = func(prefix string, n *node) {
		for _, name := range slices.Sorted(maps.Keys(n.children)) {
			c := n.children[name]
			p := prefix + name
			order = append(order, item{p, c})
			if c.dir {
				walk(p+"/", c)
			}
		}
	}
	walk("", t.root)

	var pl flattenPlan
	if t.root.hdr != nil {
		pl.early = append(pl.early, outHeader(t.root.hdr, "./", false))
	}
	for _, it := range order {
		if !it.n.dir {
			it.n.ino.paths = append(it.n.ino.paths, it.name)
		}
	}
	maxLayer := -1
	for _, it := range order {
		if !it.n.dir && isRegular(it.n.ino.hdr) {
			maxLayer = max(maxLayer, it.n.ino.layer)
		}
	}
	pl.content = make([]map[int]*inode, maxLayer+1)
	for _, it := range order {
		switch {
		case it.n.dir:
			h := it.n.hdr
			if h == nil {
				h = &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}
			}
			pl.early = append(pl.early, outHeader(h, it.name+"/", false))
		case it.n.ino.paths[0] != it.name:
			link := outHeader(it.n.ino.hdr, it.name, true)
			link.Linkname = it.n.ino.paths[0]
			if isRegular(it.n.ino.hdr) {
				pl.late = append(pl.late, link)
			} else {
				pl.early = append(pl.early, link)
			}
		case isRegular(it.n.ino.hdr):
			ino := it.n.ino
			if pl.content[ino.layer] == nil {
				pl.content[ino.layer] = map[int]*inode{}
			}
			pl.content[ino.layer][ino.index] = ino
		default:
			pl.early = append(pl.early, outHeader(it.n.ino.hdr, it.name, false))
		}
	}
	return pl
}

func isRegular(h *tar.Header) bool {
	return h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse
}

// outHeader is the header written for src under name: a fresh header, so
// that nothing of the input's encoding (format, stray PAX records, sparse
// maps) leaks into the output.
func outHeader(src *tar.Header, name string, link bool) *tar.Header {
	h := &tar.Header{
		Typeflag:   src.Typeflag,
		Name:       name,
		Mode:       src.Mode & 0o7777,
		Uid:        src.Uid,
		Gid:        src.Gid,
		Uname:      src.Uname,
		Gname:      src.Gname,
		ModTime:    src.ModTime,
		PAXRecords: xattrRecords(src.PAXRecords),
		// PAX keeps sub-second modification times; the writer adds a PAX
		// header only to entries that need one.
		Format: tar.FormatPAX,
	}
	switch {
	case link:
		h.Typeflag = tar.TypeLink
		h.PAXRecords = nil
	case isRegular(src):
		h.Typeflag = tar.TypeReg
		h.Size = src.Size
	case src.Typeflag == tar.TypeSymlink:
		h.Linkname = src.Linkname
	case src.Typeflag == tar.TypeChar || src.Typeflag == tar.TypeBlock:
		h.Devmajor, h.Devminor = src.Devmajor, src.Devminor
	}
	return h
}

// xattrRecords keeps the PAX records that carry extended attributes.
func xattrRecords(recs map[string]string) map[string]string {
	var out map[string]string
	for k, v := range recs {
		if strings.HasPrefix(k, "SCHILY.xattr.") || strings.HasPrefix(k, "LIBARCHIVE.xattr.") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
