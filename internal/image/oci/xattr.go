package oci

import (
	"archive/tar"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Xattr is one extended attribute of a file in a tar stream.
type Xattr struct {
	// Path is relative to the root, without a leading "./" or "/" or a
	// trailing "/".
	Path  string
	Name  string
	Value []byte
}

// HeaderXattrs returns the extended attributes that hdr's PAX records carry
// (SCHILY.xattr.NAME, and LIBARCHIVE.xattr.NAME, URL-encoded name and base64
// value, for names without a SCHILY record), with Path relative to the root
// as in Flatten's output.
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
