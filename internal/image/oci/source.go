// Package oci turns container images (from a registry, an OCI layout folder
// or a `docker save` archive) into one tar stream of their root file system,
// which the image build then extracts in its sandbox and copies into ext4
// exactly as it does for the Debian path (image.BuildRootfs).
package oci

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind says where a Source's image comes from.
type Kind string

// The kinds of image source, named by their prefix in a --from argument.
const (
	// Registry is "oci:REF": an image reference pulled from a registry.
	Registry Kind = "oci"
	// Layout is "oci-layout:DIR", "oci-layout:DIR:TAG" or
	// "oci-layout:DIR@DIGEST": an OCI image layout folder on disk.
	Layout Kind = "oci-layout"
	// DockerArchive is "docker-archive:FILE": the output of `docker save`.
	DockerArchive Kind = "docker-archive"
)

// ErrBadSource is wrapped by every error ParseSource returns.
var ErrBadSource = errors.New("invalid image source")

// Source is a parsed image source. Exactly the fields of its Kind are set.
type Source struct {
	Kind Kind
	// Ref is the registry reference (Registry), as given.
	Ref string
	// Path is the layout folder (Layout) or the archive file (DockerArchive).
	Path string
	// Tag selects, in a layout, the manifest whose
	// org.opencontainers.image.ref.name annotation equals it (Layout only).
	Tag string
	// Digest selects, in a layout, the manifest or index with this digest
	// (Layout only).
	Digest string
}

// String returns s in the form ParseSource accepts.
func (s Source) String() string {
	switch s.Kind {
	case Registry:
		return "oci:" + s.Ref
	case Layout:
		switch {
		case s.Digest != "":
			return "oci-layout:" + s.Path + "@" + s.Digest
		case s.Tag != "":
			return "oci-layout:" + s.Path + ":" + s.Tag
		}
		return "oci-layout:" + s.Path
	case DockerArchive:
		return "docker-archive:" + s.Path
	}
	return string(s.Kind) + ":?"
}

// ParseSource parses an image source:
//
//   - oci:REF — a registry reference such as docker.io/library/debian:bookworm
//     or registry.example/app@sha256:…; references without a registry mean
//     Docker Hub, as with docker pull.
//   - oci-layout:DIR — an OCI image layout folder. Its index.json must hold
//     exactly one manifest, or be an index of several platforms.
//   - oci-layout:DIR:TAG — the manifest of that folder whose
//     org.opencontainers.image.ref.name annotation is TAG. A TAG holds no
//     "/", so a folder whose last element contains ":" is written with a
//     trailing slash ("oci-layout:a:b/").
//   - oci-layout:DIR@sha256:HEX — the manifest (or index) with that digest,
//     listed in index.json or in an index it holds.
//   - docker-archive:FILE — a `docker save` tarball holding one image.
//
// Errors wrap ErrBadSource and say which forms are accepted. ParseSource
// does not touch the file system or the network.
func ParseSource(s string) (Source, error) {
	prefix, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Source{}, fmt.Errorf("%w %q: want oci:REF, oci-layout:DIR[:TAG|@DIGEST] or docker-archive:FILE", ErrBadSource, s)
	}
	if rest == "" {
		return Source{}, fmt.Errorf("%w %q: nothing after %q", ErrBadSource, s, prefix+":")
	}
	switch Kind(prefix) {
	case Registry:
		if _, err := name.ParseReference(rest); err != nil {
			return Source{}, fmt.Errorf("%w %q: %w", ErrBadSource, s, err)
		}
		return Source{Kind: Registry, Ref: rest}, nil
	case Layout:
		src := Source{Kind: Layout, Path: rest}
		if dir, dig, ok := cutLast(rest, "@"); ok && strings.Contains(dig, ":") {
			if _, err := v1.NewHash(dig); err != nil {
				return Source{}, fmt.Errorf("%w %q: digest: %w", ErrBadSource, s, err)
			}
			src.Path, src.Digest = dir, dig
		} else if dir, tag, ok := cutLast(rest, ":"); ok && !strings.Contains(tag, "/") {
			if tag == "" {
				return Source{}, fmt.Errorf("%w %q: empty tag after %q", ErrBadSource, s, dir+":")
			}
			src.Path, src.Tag = dir, tag
		}
		if src.Path == "" {
			return Source{}, fmt.Errorf("%w %q: no layout folder", ErrBadSource, s)
		}
		return src, nil
	case DockerArchive:
		return Source{Kind: DockerArchive, Path: rest}, nil
	case "debian":
		return Source{}, fmt.Errorf("%w %q: debian sources are not container images (the Debian build path handles them)", ErrBadSource, s)
	}
	return Source{}, fmt.Errorf("%w %q: unknown kind %q; want oci:REF, oci-layout:DIR[:TAG|@DIGEST] or docker-archive:FILE", ErrBadSource, s, prefix)
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
