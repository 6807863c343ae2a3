package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ErrPlatform is wrapped by Open's error when the source holds no image for
// the wanted platform; the message names the platforms it does hold.
var ErrPlatform = errors.New("no image for the wanted platform")

// refNameAnnotation is the OCI layout annotation that names a manifest.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Options tune Open. The zero value pulls linux/amd64 with the user's Docker
// credentials.
type Options struct {
	// Platform is the image platform to resolve to; linux/amd64 when OS and
	// Architecture are empty. Variant is compared only when set.
	Platform v1.Platform
	// Keychain supplies registry credentials; authn.DefaultKeychain (the
	// user's ~/.docker/config.json and credential helpers) when nil.
	Keychain authn.Keychain
	// Transport is the HTTP transport for registries; remote's default when
	// nil.
	Transport http.RoundTripper
	// Insecure allows plain HTTP to the registry. Loopback, localhost and
	// RFC 1918 registries use HTTP without it.
	Insecure bool
	// LayerDir, when set, is a folder (created if needed) where a registry
	// image's compressed layers are kept, named by digest, once each has
	// been downloaded whole and checked against its digest. Flatten reads
	// every layer twice, so without it each layer is downloaded twice; with
	// it, once, and a later Open of an image sharing layers reuses them. The
	// caller owns the folder and its removal; kept files are trusted when
	// read again, so it must not be writable by others. Ignored for local
	// sources.
	LayerDir string
}

func (o Options) platform() v1.Platform {
	p := o.Platform
	if p.OS == "" && p.Architecture == "" {
		p.OS, p.Architecture = "linux", "amd64"
	}
	return p
}

// Open resolves src to a single image for opts.Platform and returns it with
// the digest of its manifest ("sha256:…"), which identifies the image's
// content and so suits a build cache key. A multi-platform index is resolved
// to its entry for the platform (nested indexes included); a single image
// whose configuration names another OS or architecture is refused. Both
// failures wrap ErrPlatform and list what the source holds. An image whose
// configuration names no platform at all is accepted.
//
// For registry sources ctx bounds every request, including the layer
// downloads made later while the image is read; the layers are not fetched
// by Open itself.
func Open(ctx context.Context, src Source, opts Options) (img v1.Image, digest string, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("open image %s: %w", src, err)
		}
	}()
	want := opts.platform()
	switch src.Kind {
	case Registry:
		img, err = openRemote(ctx, src, opts, want)
		if err == nil && opts.LayerDir != "" {
			img, err = spool(img, opts.LayerDir)
		}
	case Layout:
		img, err = openLayout(src, want)
	case DockerArchive:
		img, err = tarball.ImageFromPath(src.Path, nil)
		if err == nil {
			err = checkPlatform(img, want)
		}
	default:
		err = fmt.Errorf("%w: unknown kind %q", ErrBadSource, src.Kind)
	}
	if err != nil {
		return nil, "", err
	}
	h, err := img.Digest()
	if err != nil {
		return nil, "", fmt.Errorf("manifest digest: %w", err)
	}
	return img, h.String(), nil
}

func openRemote(ctx context.Context, src Source, opts Options, want v1.Platform) (v1.Image, error) {
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(src.Ref, nameOpts...)
	if err != nil {
		return nil, err
	}
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
			return nil, fmt.Errorf("%w (credentials come from the Docker config: run `docker login %s`)", err, ref.Context().RegistryStr())
		}
		return nil, err
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		return pickFromIndex(idx, want)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, err
	}
	return img, checkPlatform(img, want)
}

func spool(img v1.Image, dir string) (v1.Image, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("layer folder: %w", err)
	}
	return &spoolImage{Image: img, dir: dir}, nil
}

func openLayout(src Source, want v1.Platform) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(src.Path)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var matches []v1.Descriptor
	switch {
	case src.Digest != "":
		owner, d, err := findDigest(idx, src.Digest)
		if err != nil {
			return nil, err
		}
		if d == nil {
			return nil, fmt.Errorf("no manifest %s in the layout", src.Digest)
		}
		return resolve(owner, *d, want)
	case src.Tag != "":
		var tags []string
		for _, d := range im.Manifests {
			tag := d.Annotations[refNameAnnotation]
			if tag == src.Tag {
				matches = append(matches, d)
			} else if tag != "" {
				tags = append(tags, tag)
			}
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("no manifest tagged %q in the layout (tags: %s)", src.Tag, listOrNone(tags))
		}
	case len(im.Manifests) == 1:
		matches = im.Manifests
	default:
		// Several manifests and no selector: treat index.json as a
		// multi-platform index, which is what layout.Write of an index
		// produces.
		return pickFromIndex(idx, want)
	}
	if len(matches) > 1 {
		// The same tag on several platforms' manifests.
		return pickFrom(idx, matches, want)
	}
	return resolve(idx, matches[0], want)
}

// findDigest searches idx and the indexes it holds for a manifest with the
// given digest; it returns the index listing it, or a nil descriptor.
func findDigest(idx v1.ImageIndex, digest string) (v1.ImageIndex, *v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	for _, d := range im.Manifests {
		if d.Digest.String() == digest {
			return idx, &d, nil
		}
	}
	for _, d := range im.Manifests {
		if !d.MediaType.IsIndex() {
			continue
		}
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		if owner, found, err := findDigest(child, digest); err != nil || found != nil {
			return owner, found, err
		}
	}
	return nil, nil, nil
}

// resolve turns one descriptor of idx into an image for want.
func resolve(idx v1.ImageIndex, d v1.Descriptor, want v1.Platform) (v1.Image, error) {
	switch {
	case d.MediaType.IsIndex():
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		return pickFromIndex(child, want)
	case d.MediaType.IsImage():
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		return img, checkPlatform(img, want)
	}
	return nil, fmt.Errorf("manifest %s has media type %q, neither an image nor an index", d.Digest, d.MediaType)
}

func pickFromIndex(idx v1.ImageIndex, want v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	return pickFrom(idx, im.Manifests, want)
}

// pickFrom returns the first image among descs (searching nested indexes)
// for want; its error lists the platforms seen.
func pickFrom(idx v1.ImageIndex, descs []v1.Descriptor, want v1.Platform) (v1.Image, error) {
	var seen []string
	for _, d := range descs {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			img, err := pickFromIndex(child, want)
			if err == nil {
				return img, nil
			}
			if !errors.Is(err, ErrPlatform) {
				return nil, err
			}
			seen = append(seen, "["+err.Error()+"]")
		case d.MediaType.IsImage():
			if isAttestation(d) {
				continue
			}
			p := d.Platform
			if p == nil {
				// Descriptors in layouts often carry no platform: ask the
				// image's configuration.
				img, err := idx.Image(d.Digest)
				if err != nil {
					return nil, err
				}
				cf, err := img.ConfigFile()
				if err != nil {
					return nil, fmt.Errorf("config of %s: %w", d.Digest, err)
				}
				if cf.OS == "" && cf.Architecture == "" {
					seen = append(seen, "unknown")
					continue
				}
				p = cf.Platform()
			}
			if matches(*p, want) {
				return idx.Image(d.Digest)
			}
			seen = append(seen, platformString(*p))
		}
	}
	return nil, fmt.Errorf("%w: want %s, the index holds %s", ErrPlatform, platformString(want), listOrNone(seen))
}

// isAttestation reports a BuildKit attestation manifest, which is listed in
// indexes as an image of platform unknown/unknown.
func isAttestation(d v1.Descriptor) bool {
	return d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
		(d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown")
}

func checkPlatform(img v1.Image, want v1.Platform) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	if cf.OS == "" && cf.Architecture == "" {
		return nil
	}
	if p := cf.Platform(); !matches(*p, want) {
		return fmt.Errorf("%w: want %s, the image is %s", ErrPlatform, platformString(want), platformString(*p))
	}
	return nil
}

func matches(have, want v1.Platform) bool {
	return have.OS == want.OS && have.Architecture == want.Architecture &&
		(want.Variant == "" || have.Variant == want.Variant)
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(slices.Compact(slices.Sorted(slices.Values(xs))), ", ")
}
