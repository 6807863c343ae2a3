package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// spoolImage keeps each compressed layer of a registry image in a folder
// the first time it is read in full, so that Flatten's second pass (and
// later builds) read the file instead of the network.
type spoolImage struct {
	v1.Image
	dir string
}

func (i *spoolImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for k, l := range ls {
		if out[k], err = i.wrap(l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (i *spoolImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return i.wrap(l)
}

func (i *spoolImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return i.wrap(l)
}

func (i *spoolImage) wrap(l v1.Layer) (v1.Layer, error) {
	return partial.CompressedToLayer(&spoolLayer{inner: l, dir: i.dir})
}

// spoolLayer is a partial.CompressedLayer; partial adds decompression.
type spoolLayer struct {
	inner v1.Layer
	dir   string
}

func (l *spoolLayer) Digest() (v1.Hash, error)            { return l.inner.Digest() }
func (l *spoolLayer) DiffID() (v1.Hash, error)            { return l.inner.DiffID() }
func (l *spoolLayer) Size() (int64, error)                { return l.inner.Size() }
func (l *spoolLayer) MediaType() (types.MediaType, error) { return l.inner.MediaType() }

// Compressed returns the kept file when there is one. Otherwise it streams
// from the registry into a temporary file that becomes the kept file only
// when the whole blob was read and its sha256 matches the digest.
func (l *spoolLayer) Compressed() (io.ReadCloser, error) {
	h, err := l.inner.Digest()
	if err != nil {
		return nil, err
	}
	final := filepath.Join(l.dir, h.Algorithm+"-"+h.Hex)
	if f, err := os.Open(final); err == nil {
		return f, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	rc, err := l.inner.Compressed()
	if err != nil {
		return nil, err
	}
	if h.Algorithm != "sha256" {
		return rc, nil // cannot check it: do not keep it
	}
	tmp, err := os.CreateTemp(l.dir, ".partial-*")
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("layer folder: %w", err)
	}
	return &spoolReader{rc: rc, tmp: tmp, final: final, want: h.Hex, sum: sha256.New()}, nil
}

type spoolReader struct {
	rc    io.ReadCloser
	tmp   *os.File
	final string
	want  string
	sum   hash.Hash
	done  bool
}

func (s *spoolReader) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if n > 0 && !s.done {
		s.sum.Write(p[:n])
		if _, werr := s.tmp.Write(p[:n]); werr != nil {
			return n, fmt.Errorf("keep layer: %w", werr)
		}
	}
	if errors.Is(err, io.EOF) && !s.done {
		s.done = true
		if got := hex.EncodeToString(s.sum.Sum(nil)); got != s.want {
			return n, fmt.Errorf("layer digest mismatch: got sha256:%s, want sha256:%s", got, s.want)
		}
		if cerr := s.tmp.Close(); cerr != nil {
			return n, fmt.Errorf("keep layer: %w", cerr)
		}
		if rerr := os.Rename(s.tmp.Name(), s.final); rerr != nil {
			return n, fmt.Errorf("keep layer: %w", rerr)
		}
	}
	return n, err
}

// Close drops the temporary file unless the blob was read to its end.
func (s *spoolReader) Close() error {
	err := s.rc.Close()
	if !s.done {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
		s.done = true
	}
	return err
}
