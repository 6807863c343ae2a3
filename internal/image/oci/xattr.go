package oci

import (
	"archive/tar"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Xattr is one extended attribute of a file in a tar stream.
type Xattr struct {
	// Path is relative to the root, without a leading "./" or "/" or a
	// trailing "/", as in Flatten's output.
	Path  string
	Name  string
	Value []byte
}

// ReadXattrs returns the extended attributes recorded in the tar stream r
// (such as Flatten's output), in stream order: SCHILY.xattr.NAME records,
// and LIBARCHIVE.xattr.NAME records (URL-encoded name, base64 value) for
// names without a SCHILY record.
//
// It exists because the fakeroot + mkfs.ext4 -d route cannot carry them:
// with fakeroot 1.31, files that tar --xattrs extracts get a faked st_mode
// with no file type and mkfs.ext4 -d (e2fsprogs 1.47.0) fails on them
// ("ignoring entry", "File not found by ext2_lookup"). Extract without
// --xattrs, make the file system, then set these with WriteDebugfsScript.
func ReadXattrs(r io.Reader) ([]Xattr, error) {
	var out []Xattr
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read xattrs: %w", err)
		}
		xs, err := HeaderXattrs(hdr)
		if err != nil {
			return nil, fmt.Errorf("read xattrs: %w", err)
		}
		out = append(out, xs...)
	}
}

// HeaderXattrs returns the extended attributes that hdr's PAX records carry
// (SCHILY.xattr.NAME, and LIBARCHIVE.xattr.NAME for names without a SCHILY
// record), with Path cleaned as in ReadXattrs.
func HeaderXattrs(hdr *tar.Header) ([]Xattr, error) {
	var out []Xattr
	p := clean(hdr.Name)
	seen := map[string]bool{}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			out = append(out, Xattr{Path: p, Name: name, Value: []byte(v)})
			seen[name] = true
		}
	}
	for k, v := range hdr.PAXRecords {
		enc, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr.")
		if !ok {
			continue
		}
		name, err := url.PathUnescape(enc)
		if err != nil {
			return nil, fmt.Errorf("%s: record %q: %w", p, k, err)
		}
		if seen[name] {
			continue
		}
		val, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			if val, err = base64.RawStdEncoding.DecodeString(v); err != nil {
				return nil, fmt.Errorf("%s: record %q: %w", p, k, err)
			}
		}
		out = append(out, Xattr{Path: p, Name: name, Value: val})
	}
	return out, nil
}

// WriteDebugfsScript writes to w a `debugfs -w -f` command file that sets
// xs on an ext4 image built from the same tree (ea_set -f, one value file
// per attribute, written into valueDir, which must exist and outlive the
// debugfs run). It refuses, naming it, a path or attribute name holding a
// double quote, a newline or a NUL, which the command file cannot express.
func WriteDebugfsScript(w io.Writer, xs []Xattr, valueDir string) error {
	for i, x := range xs {
		for _, s := range []string{x.Path, x.Name, valueDir} {
			if strings.ContainsAny(s, "\"\n\r\x00") {
				return fmt.Errorf("xattr %s of %q: cannot be written for debugfs", x.Name, x.Path)
			}
		}
		vf := filepath.Join(valueDir, fmt.Sprintf("xattr-%d", i))
		if err := os.WriteFile(vf, x.Value, 0o600); err != nil {
			return fmt.Errorf("xattr value file: %w", err)
		}
		target := "/" + x.Path
		if x.Path == "." {
			target = "/"
		}
		if _, err := fmt.Fprintf(w, "ea_set -f \"%s\" \"%s\" \"%s\"\n", vf, target, x.Name); err != nil {
			return err
		}
	}
	return nil
}
