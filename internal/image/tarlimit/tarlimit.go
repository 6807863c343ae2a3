// Package tarlimit caps what an image build may expand to: the bytes and
// the entries of its tar streams, counted from the headers before any
// content is written (so a small layer declaring a 1 TiB sparse file stops
// at once) and from the bytes actually read (so a decompression bomb or an
// endless stream stops once it has produced the cap).
package tarlimit

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"

	"github.com/bangerhq/banger/internal/units"
)

// ErrTooLarge is wrapped by every error of a stream over its limits.
var ErrTooLarge = errors.New("the image is larger than a build may be")

// Limits are a build's caps. A zero field is no cap.
type Limits struct {
	// MaxBytes caps the expanded size: the content of every file (a
	// sparse file at its full size), and the uncompressed bytes read.
	MaxBytes int64
	// MaxFiles caps the number of entries.
	MaxFiles int64
	// Why says where MaxBytes comes from, for the error: the config key,
	// or the free space of the build folder.
	Why string
}

// Counter counts entries and bytes against Limits.
type Counter struct {
	Limits
	bytes, files, read int64
}

// Add counts one entry; its error names the entry and the limit it broke.
func (c *Counter) Add(hdr *tar.Header) error {
	name := path.Clean("/" + hdr.Name)
	c.files++
	if c.MaxFiles > 0 && c.files > c.MaxFiles {
		return fmt.Errorf("%w: more than %d files and folders ([image] max_files); at %s", ErrTooLarge, c.MaxFiles, Name(name))
	}
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse {
		if hdr.Size < 0 {
			return fmt.Errorf("%s: negative size %d", Name(name), hdr.Size)
		}
		c.bytes += hdr.Size
		if c.MaxBytes > 0 && (c.bytes > c.MaxBytes || hdr.Size > c.MaxBytes) {
			return fmt.Errorf("%w: it expands to more than %s (%s); %s alone is %s",
				ErrTooLarge, units.IEC(c.MaxBytes), c.why(), Name(name), units.IEC(hdr.Size))
		}
	}
	return nil
}

// Bytes and Files are what has been counted so far.
func (c *Counter) Bytes() int64 { return c.bytes }

// Files: see Bytes.
func (c *Counter) Files() int64 { return c.files }

func (c *Counter) why() string {
	if c.Why != "" {
		return c.Why
	}
	return "[image] max_size"
}

// Reader returns r, counting what is read from it against MaxBytes plus
// what the entries counted so far may take beyond their content (4 KiB an
// entry for headers and padding, and 1 MiB); past that, reads fail with
// ErrTooLarge.
func (c *Counter) Reader(r io.Reader, what string) io.Reader {
	return &reader{c: c, r: r, what: what}
}

type reader struct {
	c    *Counter
	r    io.Reader
	what string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.c.read += int64(n)
	if r.c.MaxBytes > 0 && r.c.read > r.c.MaxBytes+r.c.files*4096+1<<20 {
		return n, fmt.Errorf("%w: %s gave more than %s uncompressed (%s)", ErrTooLarge, r.what, units.IEC(r.c.MaxBytes), r.c.why())
	}
	return n, err
}

// Name is an entry name fit for an error message: quoted (control
// characters escaped) and, when long, shortened with its length said.
func Name(name string) string {
	if len(name) > 200 {
		return strconv.Quote(name[:200]) + fmt.Sprintf("... (%d bytes)", len(name))
	}
	return strconv.Quote(name)
}
