package bundle

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/strictmodes"
)

// Package writes the verified bundle in d as a gzip'd tar to out (the lock,
// the manifest copy when the bundle has one, and every locked file, in lock
// order, with fixed timestamps and owners so the same bundle gives the same
// tarball) and out+".sha256" (one `sha256sum` line). It refuses a bundle
// that does not verify. It returns the archive's SHA-256.
func Package(ctx context.Context, d Dir, out string) (string, error) {
	r, err := Inspect(ctx, d, InspectOptions{NoCache: true})
	if err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	if err := r.Err(); err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	names := []string{LockName}
	if _, err := os.Stat(filepath.Join(d.Path, ManifestName)); err == nil {
		names = append(names, ManifestName)
	}
	for _, c := range r.Components {
		if c.Lock != nil {
			for _, f := range c.Lock.Files {
				names = append(names, f.Path)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	// The archive is hashed as it is written, and appears at out whole.
	af, err := atomicfile.Create(out, 0o644)
	if err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	defer af.Abort()
	h := sha256.New()
	if err := writeTar(io.MultiWriter(af, h), d.Path, names); err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	if err := af.Commit(); err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	line := sum + "  " + filepath.Base(out) + "\n"
	if err := atomicfile.WriteFile(out+".sha256", []byte(line), 0o644); err != nil {
		return "", fmt.Errorf("package runtime bundle: %w", err)
	}
	return sum, nil
}

func writeTar(w io.Writer, dir string, names []string) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, n := range names {
		// Parent directories first, so any tar unpacks it.
		var parents []string
		for p := path.Dir(n); p != "." && !dirs[p]; p = path.Dir(p) {
			parents = append([]string{p}, parents...)
			dirs[p] = true
		}
		for _, p := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		full := filepath.Join(dir, filepath.FromSlash(n))
		st, err := os.Lstat(full)
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", full)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Size: st.Size(), Mode: int64(st.Mode().Perm()), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// ReadSHA256File returns the SHA-256 in a `sha256sum`-style file (its
// first field).
func ReadSHA256File(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read checksum: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "", fmt.Errorf("checksum file %s is empty", p)
	}
	sum := strings.ToLower(fields[0])
	if err := checkHex(sum); err != nil {
		return "", fmt.Errorf("checksum file %s: %w", p, err)
	}
	return sum, nil
}

// Install unpacks the bundle tarball into target atomically. The tarball
// must have SHA-256 want; when want is "", it is read from tarball+".sha256"
// (its absence is an error). The tarball is opened once: that descriptor is
// hashed and then unpacked, so what is installed is exactly what was
// verified, whatever happens at the tarball's path meanwhile. It is
// unpacked into a temporary directory beside target (same filesystem),
// verified against the lock it carries, and only then swapped with target
// (renameat2 RENAME_EXCHANGE, or two renames where the filesystem lacks
// it), after which the old bundle is removed. Until the swap, target is
// untouched: an interrupted or failed install leaves the old bundle intact
// and removes its temporary directory (a killed process may leave a
// .banger-install-* directory beside target, which the next install does
// not reuse). As root, Install refuses a target whose folder a user other
// than root can change (see package strictmodes): such a user could swap
// the verified bundle for another before it is used.
func Install(ctx context.Context, tarball, target, want string) error {
	if want == "" {
		sum, err := ReadSHA256File(tarball + ".sha256")
		if err != nil {
			return fmt.Errorf("install runtime bundle %s: no checksum given and %w", tarball, err)
		}
		want = sum
	}
	fh, err := openVerified(tarball, want)
	if err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	defer fh.Close()
	target, err = filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := strictmodes.Check("runtime bundle folder", parent, 0); err != nil {
			return fmt.Errorf("install runtime bundle into %s: %w", target, err)
		}
	}
	tmp, err := os.MkdirTemp(parent, ".banger-install-"+filepath.Base(target)+"-*")
	if err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := unpack(ctx, fh, tmp); err != nil {
		return fmt.Errorf("install runtime bundle %s: %w", tarball, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	r, err := Inspect(ctx, Dir{Path: tmp, How: "unpacked from " + tarball}, InspectOptions{NoCache: true})
	if err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("install runtime bundle %s: refusing a bundle that does not verify: %w", tarball, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("install runtime bundle: %w", err)
	}
	if err := swapDir(tmp, target); err != nil {
		return fmt.Errorf("install runtime bundle into %s: %w", target, err)
	}
	return nil
}

// swapDir puts directory src at dst. When dst exists the two are exchanged
// atomically and the old contents (now at src) are removed.
func swapDir(src, dst string) error {
	st, err := os.Lstat(dst)
	if errors.Is(err, os.ErrNotExist) {
		return os.Rename(src, dst)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dst)
	}
	err = unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		// No atomic exchange here: move the old one aside, then back on failure.
		old := src + ".old"
		if err := os.Rename(dst, old); err != nil {
			return err
		}
		if err := os.Rename(src, dst); err != nil {
			if rerr := os.Rename(old, dst); rerr != nil {
				return fmt.Errorf("%w; and restoring the old bundle from %s failed: %v", err, old, rerr)
			}
			return err
		}
		return os.RemoveAll(old)
	}
	if err != nil {
		return fmt.Errorf("exchange %s and %s: %w", src, dst, err)
	}
	return os.RemoveAll(src)
}

// unpack extracts the bundle tarball read from r into dir: regular files
// and directories only, every name a clean relative path, modes limited to
// 0777.
func unpack(ctx context.Context, r io.Reader, dir string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if err := checkRel(name); err != nil {
			return fmt.Errorf("member %q: %w", h.Name, err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := writeFrom(dst, tr, mode); err != nil {
				return err
			}
		default:
			return fmt.Errorf("member %q: type %q not allowed in a runtime bundle (regular files and directories only)", h.Name, h.Typeflag)
		}
	}
}

// FetchBundle downloads a bundle tarball from rawURL, verified against its
// published checksum at rawURL+".sha256" (or want when not ""), into the
// cache, and returns its path and SHA-256 for Install.
func (f *Fetcher) FetchBundle(ctx context.Context, rawURL, want string) (string, string, error) {
	if want == "" {
		sum, err := f.PublishedSHA256(ctx, rawURL+".sha256", urlBase(rawURL))
		if err != nil {
			return "", "", fmt.Errorf("fetch bundle: %w", err)
		}
		want = sum
	}
	p, err := f.Download(ctx, rawURL, want)
	if err != nil {
		return "", "", fmt.Errorf("fetch bundle: %w", err)
	}
	return p, want, nil
}
