package imagesvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vm"
)

// Kinds of file image.import accepts, told apart by content.
const (
	importExt4    = "ext4"
	importTar     = "tar"
	importTarGzip = "tar+gzip"
	importTarXz   = "tar+xz"
	importTarZstd = "tar+zstd"
)

// detectImportKind reads the start of f and says what it holds: an ext2/3/4
// file system (superblock magic 0xEF53 at byte 1080), a tar archive ("ustar"
// at byte 257), or a gzip, xz or zstd stream (taken to be a compressed tar;
// the tar import reads it). "" means none of these.
func detectImportKind(f io.ReaderAt) string {
	var b [1082]byte
	n, _ := f.ReadAt(b[:], 0)
	h := b[:n]
	switch {
	case len(h) >= 1082 && h[1080] == 0x53 && h[1081] == 0xEF:
		return importExt4
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return importTar
	case len(h) >= 2 && h[0] == 0x1f && h[1] == 0x8b:
		return importTarGzip
	case len(h) >= 6 && string(h[:6]) == "\xfd7zXZ\x00":
		return importTarXz
	case len(h) >= 4 && string(h[:4]) == "\x28\xb5\x2f\xfd":
		return importTarZstd
	}
	return ""
}

// Import makes image p.Name from p.File: an ext4 image, checked and copied
// in, or a root file system tarball. A failed or cancelled import (the
// client hanging up cancels ctx) leaves no folder and no row.
func (s *Service) Import(ctx context.Context, p api.ImageImportParams) (api.Image, error) {
	if err := vm.ValidateName(p.Name); err != nil {
		return api.Image{}, api.Errorf(api.ErrInvalid, "invalid image name %q: use 1-63 lowercase letters, digits and hyphens", p.Name)
	}
	if !filepath.IsAbs(p.File) {
		return api.Image{}, api.Errorf(api.ErrInvalid, "import file %q: the path must be absolute", p.File)
	}
	if _, err := store.GetImage(ctx, s.store.DB, p.Name); err == nil {
		return api.Image{}, api.Errorf(api.ErrExists, "an image named %q already exists: pick another name, or remove it first with `banger image rm %s`", p.Name, p.Name)
	}
	f, err := os.Open(p.File)
	if errors.Is(err, os.ErrNotExist) {
		return api.Image{}, api.Errorf(api.ErrNotFound, "import file %s does not exist", p.File)
	}
	if err != nil {
		return api.Image{}, api.Errorf(api.ErrInvalid, "open import file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return api.Image{}, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return api.Image{}, api.Errorf(api.ErrInvalid, "%s is not a regular file: import an ext4 image file or a root file system tarball", p.File)
	}
	kind := detectImportKind(f)
	f.Close()
	if kind == "" {
		return api.Image{}, api.Errorf(api.ErrInvalid, "%s is neither an ext4 image nor a (compressed) tar archive of a root file system", p.File)
	}
	release, err := s.claim(p.Name)
	if err != nil {
		return api.Image{}, err
	}
	defer release()
	if kind != importExt4 {
		return s.importTarball(ctx, p.Name, p.File)
	}
	return s.importExt4(ctx, p.Name, p.File)
}

// importTarball makes an image from a root file system tarball (plain or
// compressed), built like an OCI image; its digest is the file's SHA-256.
func (s *Service) importTarball(ctx context.Context, name, file string) (api.Image, error) {
	s.progress(ctx, api.Progress{Phase: "digest", Message: "hashing " + file})
	digest, err := fileDigest(ctx, file)
	if err != nil {
		return api.Image{}, fmt.Errorf("import %s: %w", file, err)
	}
	return s.buildFromRootfsTar(ctx, name, file, digest)
}

// Paths whose absence an imported image is warned about.
const sshdImagePath = "/usr/sbin/sshd"

// importExt4 copies the ext4 image file into a new image folder and records
// it. The checks run on the copy, so what is checked and hashed is what
// VMs will boot.
func (s *Service) importExt4(ctx context.Context, name, file string) (api.Image, error) {
	start := time.Now()
	id := store.NewID()
	dir := filepath.Join(s.cfg.Dirs.ImagesDir(), id)
	if err := os.MkdirAll(s.cfg.Dirs.ImagesDir(), 0o700); err != nil {
		return api.Image{}, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	fail := func(err error) (api.Image, error) {
		os.RemoveAll(dir)
		if ctx.Err() != nil {
			s.log.Warn("image import cancelled", "image", name, "file", file)
		} else {
			s.log.Warn("image import failed", "image", name, "file", file, "err", err)
		}
		return api.Image{}, err
	}
	s.log.Info("image import started", "image", name, "file", file)
	out := filepath.Join(dir, "rootfs.ext4")
	st, err := os.Stat(file)
	if err != nil {
		return fail(err)
	}
	s.progress(ctx, api.Progress{Phase: "copy", Message: "copying " + file})
	if err := image.CloneDisk(ctx, file, out, st.Size()); err != nil {
		return fail(fmt.Errorf("import %s: %w", file, err))
	}
	// The file is whatever someone handed over: e2fsck and debugfs read
	// it in a build sandbox.
	ids, err := s.sandboxIDs()
	if err != nil {
		return fail(err)
	}
	s.progress(ctx, api.Progress{Phase: "check", Message: "checking the file system (e2fsck -fn)"})
	info, err := image.InspectImported(ctx, ids, out, []string{sshdImagePath, doctor.AgentImagePath})
	if err != nil {
		switch {
		case errors.Is(err, image.ErrMissingTool):
			return fail(api.Errorf(api.ErrPrecondition, "%w", err))
		case errors.Is(err, image.ErrBadFileSystem):
			why := strings.ReplaceAll(strings.TrimPrefix(err.Error(), image.ErrBadFileSystem.Error()+": "), out, file)
			return fail(api.Errorf(api.ErrInvalid, "%s does not hold a sound ext4 file system (%s): repair it with `e2fsck -f %s`, or import another file", file, why, file))
		}
		if ctx.Err() != nil {
			return fail(err)
		}
		return fail(api.Errorf(api.ErrInvalid, "read %s: %w", file, err))
	}
	s.progress(ctx, api.Progress{Phase: "digest", Message: "hashing the image"})
	digest, err := fileDigest(ctx, out)
	if err != nil {
		return fail(err)
	}
	var warnings []string
	if !info.Present[sshdImagePath] {
		warnings = append(warnings, "the image has no SSH server ("+sshdImagePath+"): `banger vm create` waits for SSH and will time out; import it as a rootfs tarball instead, and customize.sh will install one")
	}
	if !info.Present[doctor.AgentImagePath] {
		warnings = append(warnings, "the image has no guest agent ("+doctor.AgentImagePath+"): `banger vm create` waits for it and `banger vm ping` will not answer; import it as a rootfs tarball instead, and customize.sh will install it")
	}
	for _, w := range warnings {
		s.log.Warn("imported image: "+w, "image", name)
	}
	release := ""
	if len(info.KernelModules) == 1 {
		release = info.KernelModules[0]
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	row := store.Image{ID: id, Name: name, Source: "import:" + filepath.Base(file), Path: out, SizeBytes: st.Size(),
		KernelRelease: release, Digest: digest, BuildSeconds: time.Since(start).Seconds()}
	if err := store.InsertImage(context.WithoutCancel(ctx), s.store.DB, &row); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(api.Errorf(api.ErrExists, "an image named %q already exists", name))
		}
		return fail(err)
	}
	s.log.Info("image imported", "image", name, "digest", digest, "kernel_release", release,
		"took", time.Since(start).Round(time.Millisecond))
	im := s.view(ctx, row)
	im.Warnings = warnings
	return im, nil
}

// fileDigest returns "sha256:HEX" of the file at path; ctx stops it.
func fileDigest(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", path, err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
