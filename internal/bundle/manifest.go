package bundle

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
)

// ManifestName is the manifest's file name at the repository root (and, as
// a copy, inside a packaged bundle).
const ManifestName = "runtime-bundle.toml"

// Component kinds a manifest may use.
const (
	// KindDownload is an archive fetched from a URL; files are taken out of it.
	KindDownload = "download"
	// KindRecipe is built on this machine by a local script from a pinned input.
	KindRecipe = "recipe"
	// KindBuild is built from this repository.
	KindBuild = "build"
)

// KnownComponents are the components banger uses. A manifest naming any
// other is refused, so a typo cannot silently drop a component.
var KnownComponents = []string{"firecracker", "kernel", "agent"}

// Manifest is runtime-bundle.toml: the bundle's version and, per component,
// where it comes from and which files it puts into the bundle.
type Manifest struct {
	Schema     int                   `toml:"schema"`
	Version    string                `toml:"version"`
	Components map[string]*Component `toml:"components"`
}

// Component is one part of the bundle.
type Component struct {
	// Name is the key under [components]; filled in by ParseManifest.
	Name string `toml:"-"`
	// Kind is KindDownload, KindRecipe or KindBuild.
	Kind string `toml:"kind"`
	// Version is the component's own version (Firecracker's release, the
	// kernel release).
	Version string `toml:"version"`
	// Optional components may be absent from a bundle; when present they
	// must verify like any other.
	Optional bool `toml:"optional"`
	// Fix is the command that (re)creates the component, quoted in errors.
	Fix string `toml:"fix"`

	// URL (download) is the archive to fetch. SHA256 pins the archive; when
	// empty, SHA256URL names the release's published checksum file.
	URL       string `toml:"url"`
	SHA256    string `toml:"sha256"`
	SHA256URL string `toml:"sha256_url"`

	// Recipe (recipe, build) is the script or package that builds it.
	Recipe string `toml:"recipe"`
	// Package, PackageVersion and PackageSHA256 (recipe) pin its input.
	Package        string `toml:"package"`
	PackageVersion string `toml:"package_version"`
	PackageSHA256  string `toml:"package_sha256"`

	Files []ManifestFile `toml:"files"`
}

// ManifestFile is one file (or, with Tree, one directory tree) a component
// puts into the bundle.
type ManifestFile struct {
	// Path is relative to the bundle directory, slash-separated.
	Path string `toml:"path"`
	// From (download) is the member of the archive it is taken from.
	From string `toml:"from"`
	// Mode is the octal permission bits, e.g. "0755"; empty means 0644.
	Mode string `toml:"mode"`
	// SHA256 pins the file's contents when known; recipe and build outputs
	// are recorded in the lock instead.
	SHA256 string `toml:"sha256"`
	// Tree marks Path as a directory whose every file is recorded in the lock.
	Tree bool `toml:"tree"`
}

// Pinned reports whether the component's source is pinned by a SHA-256 in
// the manifest (rather than verified against a published checksum or
// recorded at build time).
func (c *Component) Pinned() bool {
	return c.SHA256 != ""
}

// FixCommand is the command that fixes a missing or broken component.
func (c *Component) FixCommand() string {
	if c.Fix != "" {
		return c.Fix
	}
	return "make runtime"
}

// FileMode returns f's permission bits (0644 when Mode is empty).
func (f ManifestFile) FileMode() os.FileMode {
	if f.Mode == "" {
		return 0o644
	}
	m, _ := strconv.ParseUint(f.Mode, 8, 32) // validated by ParseManifest
	return os.FileMode(m)
}

// Sorted returns the manifest's components ordered by name.
func (m *Manifest) Sorted() []*Component {
	names := make([]string, 0, len(m.Components))
	for n := range m.Components {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*Component, 0, len(names))
	for _, n := range names {
		out = append(out, m.Components[n])
	}
	return out
}

// LoadManifest reads and parses the manifest at p.
func LoadManifest(p string) (*Manifest, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle manifest: %w", err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("bundle manifest %s: %w", p, err)
	}
	return m, nil
}

// ParseManifest parses and validates a manifest. Unknown keys, unknown
// components or kinds, missing fields and malformed SHA-256 values are
// errors that name the component and the field.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := strictDecode(b, &m); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// strictDecode decodes TOML into v, refusing unknown keys by name and line.
func strictDecode(b []byte, v any) error {
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			var keys []string
			for _, e := range sm.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%s (line %d)", strings.Join(e.Key(), "."), row))
			}
			return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("line %d column %d: %s", row, col, de.Error())
		}
		return err
	}
	return nil
}

func (m *Manifest) validate() error {
	if m.Schema != 1 {
		return fmt.Errorf("schema = %d: this banger reads schema 1", m.Schema)
	}
	if m.Version == "" {
		return errors.New("missing field version (the bundle version)")
	}
	if len(m.Components) == 0 {
		return errors.New("no [components]")
	}
	seen := map[string]string{}
	var errs []error
	for n, c := range m.Components {
		if c == nil {
			return fmt.Errorf("component %q: empty", n)
		}
		c.Name = n
	}
	for _, c := range m.Sorted() {
		if err := c.validate(seen); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Component) validate(seen map[string]string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("component %q: %s", c.Name, fmt.Sprintf(format, a...))
	}
	known := false
	for _, k := range KnownComponents {
		known = known || k == c.Name
	}
	if !known {
		return fail("unknown component (banger uses %s)", strings.Join(KnownComponents, ", "))
	}
	if c.Version == "" {
		return fail("missing field version")
	}
	switch c.Kind {
	case KindDownload:
		if c.URL == "" {
			return fail("missing field url (kind download)")
		}
		if c.SHA256 == "" && c.SHA256URL == "" {
			return fail("neither sha256 nor sha256_url: a download must be verifiable")
		}
		if c.Package != "" || c.PackageVersion != "" || c.PackageSHA256 != "" {
			return fail("package fields belong to kind recipe")
		}
	case KindRecipe, KindBuild:
		if c.Recipe == "" {
			return fail("missing field recipe (kind %s)", c.Kind)
		}
		if c.URL != "" || c.SHA256 != "" || c.SHA256URL != "" {
			return fail("url, sha256 and sha256_url belong to kind download")
		}
		if c.Kind == KindRecipe && c.Package != "" && c.PackageVersion == "" {
			return fail("package %q without package_version", c.Package)
		}
	case "":
		return fail("missing field kind (download, recipe or build)")
	default:
		return fail("unknown kind %q (download, recipe or build)", c.Kind)
	}
	if err := checkHex(c.SHA256); err != nil {
		return fail("sha256: %v", err)
	}
	if err := checkHex(c.PackageSHA256); err != nil {
		return fail("package_sha256: %v", err)
	}
	if len(c.Files) == 0 {
		return fail("no files")
	}
	for i, f := range c.Files {
		ff := func(format string, a ...any) error {
			return fail("files[%d] (%s): %s", i, f.Path, fmt.Sprintf(format, a...))
		}
		if f.Path == "" {
			return fail("files[%d]: missing field path", i)
		}
		if err := checkRel(f.Path); err != nil {
			return ff("path: %v", err)
		}
		if f.Path == LockName || f.Path == ManifestName {
			return ff("path is reserved for the bundle's own metadata")
		}
		if other, dup := seen[f.Path]; dup {
			return ff("path also listed by component %q", other)
		}
		seen[f.Path] = c.Name
		if err := checkHex(f.SHA256); err != nil {
			return ff("sha256: %v", err)
		}
		if f.Mode != "" {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o777 {
				return ff("mode %q: want octal permission bits such as \"0755\"", f.Mode)
			}
		}
		if c.Kind == KindDownload {
			if f.From == "" {
				return ff("missing field from (the archive member)")
			}
			if f.Tree {
				return ff("tree is not supported for kind download")
			}
		} else if f.From != "" {
			return ff("from belongs to kind download")
		}
		if f.Tree && (f.SHA256 != "" || f.Mode != "") {
			return ff("a tree takes neither sha256 nor mode")
		}
	}
	return nil
}

// checkHex accepts "" or 64 hex digits.
func checkHex(s string) error {
	if s == "" {
		return nil
	}
	if len(s) != 64 {
		return fmt.Errorf("%q is %d characters, want 64 hex digits", s, len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("%q is not hex", s)
	}
	if strings.ToLower(s) != s {
		return fmt.Errorf("%q: use lower-case hex", s)
	}
	return nil
}

// checkRel refuses paths that could leave the bundle directory.
func checkRel(p string) error {
	if strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("%q must be a clean relative path inside the bundle", p)
	}
	return nil
}
