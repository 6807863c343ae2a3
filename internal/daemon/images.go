package daemon

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vm"
)

// imageService implements the image methods.
type imageService struct {
	d      *Daemon
	accel  string
	sshPub string
	log    *slog.Logger

	mu       sync.Mutex
	building map[string]bool
}

func (s *imageService) view(ctx context.Context, im store.Image) api.Image {
	users, _ := store.ImageUsers(ctx, s.d.store.DB, im.ID)
	return imageView(im, users)
}

// imageView is what users see of image row im used by VMs users.
func imageView(im store.Image, users []string) api.Image {
	out := api.Image{ID: im.ID, Name: im.Name, Source: im.Source, Path: im.Path, SizeBytes: im.SizeBytes,
		KernelRelease: im.KernelRelease, CreatedAt: im.CreatedAt, UsedBy: users,
		Digest: im.Digest, BuildSeconds: im.BuildSeconds, Cached: im.Cached, CacheKey: im.CacheKey}
	if _, allocated, err := image.Size(im.Path); err == nil {
		out.AllocatedBytes = allocated
	}
	return out
}

// List returns every image.
func (s *imageService) List(ctx context.Context) ([]api.Image, error) {
	rows, err := store.ListImages(ctx, s.d.store.DB)
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(rows))
	for _, r := range rows {
		out = append(out, s.view(ctx, r))
	}
	return out, nil
}

// Get returns one image by name or id.
func (s *imageService) Get(ctx context.Context, ref string) (api.Image, error) {
	im, err := store.GetImage(ctx, s.d.store.DB, ref)
	if errors.Is(err, store.ErrNotFound) {
		return api.Image{}, api.Errorf(api.ErrNotFound, "no image named %q: see `banger image ls`", ref)
	}
	if err != nil {
		return api.Image{}, err
	}
	return s.view(ctx, im), nil
}

// Delete removes an image and returns it as it was (UsedBy lists the VMs
// that still name it). An image VMs use is refused unless p.Force: their
// disks are full copies (reflinks or sparse copies, see image.CloneDisk)
// that never read the image file again, so the file goes and the row stays
// as a tombstone (store.MarkImageRemoved) until the last of those VMs is
// deleted.
//
// The row changes first, in one transaction with the check for users, and
// the files go after: a daemon that dies in between leaves only a folder
// without a row, which the next start sweeps (sweepImageFolders).
func (s *imageService) Delete(ctx context.Context, p api.ImageDeleteParams) (api.Image, error) {
	var im store.Image
	var users []string
	err := s.d.store.Tx(ctx, func(tx *sql.Tx) error {
		var err error
		im, err = store.GetImage(ctx, tx, p.Name)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.ErrNotFound, "no image named %q: see `banger image ls`", p.Name)
		}
		if err != nil {
			return err
		}
		if users, err = store.ImageUsers(ctx, tx, im.ID); err != nil {
			return err
		}
		if len(users) == 0 {
			return store.DeleteImage(ctx, tx, im.ID)
		}
		if !p.Force {
			return api.Errorf(api.ErrPrecondition, "image %q is used by VM(s) %s: remove them first, or use `banger image rm --force %s`, which removes it anyway (VM disks are full copies and do not need the image)",
				im.Name, strings.Join(users, ", "), im.Name)
		}
		return store.MarkImageRemoved(ctx, tx, im.ID)
	})
	if err != nil {
		return api.Image{}, err
	}
	out := imageView(im, users)
	s.log.Info("image deleted", "image", im.Name, "id", im.ID, "kept_for_vms", strings.Join(users, ","))
	return out, s.removeFiles(im)
}

// removeFiles deletes the files of image row im: its folder when that is
// the image's own folder under the images directory, else nothing (a row
// registered for a file elsewhere, as bench/seed does, does not own it).
func (s *imageService) removeFiles(im store.Image) error {
	dir := filepath.Dir(im.Path)
	if filepath.Dir(dir) != filepath.Clean(s.d.dirs.ImagesDir()) {
		s.log.Warn("image file is outside the images directory; leaving it", "image", im.Name, "path", im.Path)
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("image %q is deleted but its folder is not (the next daemon start retries): %w", im.Name, err)
	}
	return nil
}

// sweep runs at daemon start, before any request. First it makes sure
// nothing of an earlier daemon's builds still runs: their sandboxes and
// mmdebstrap die with that daemon, but maybe not yet, and a folder must not
// be removed while something writes into it. Then it runs
// sweepImageFolders. It logs what it could not do: a leftover folder wastes
// space but breaks nothing.
func (s *imageService) sweep(ctx context.Context) {
	n, err := sandbox.KillOwned(ownerToken(s.d.dirs), 15*time.Second)
	if n > 0 {
		s.log.Warn("killed processes an earlier daemon's image builds left", "processes", n)
	}
	if err != nil {
		s.log.Warn("image build processes of an earlier daemon", "err", err)
		// Their folders stay until the next start.
		return
	}
	if n, err := store.DeleteBuildLeases(ctx, s.d.store.DB); err != nil || n > 0 {
		s.log.Info("freed the addresses of an earlier daemon's builds", "leases", n, "err", err)
	}
	if err := s.sweepImageFolders(ctx); err != nil {
		s.log.Warn("clean up image folders", "err", err)
	}
}

// sweepImageFolders runs once at daemon start, before any request: it
// removes image folders that no live image row points at (left by a build
// or import the daemon did not finish, or by an `image rm` that died
// between the row change and the file removal), and image tombstones no VM
// names any more.
func (s *imageService) sweepImageFolders(ctx context.Context) error {
	if err := store.DeleteUnusedRemovedImages(ctx, s.d.store.DB); err != nil {
		return err
	}
	rows, err := store.ListImages(ctx, s.d.store.DB)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, r := range rows {
		live[r.ID] = true
		live[filepath.Base(filepath.Dir(r.Path))] = true
	}
	return store.SweepFolders(s.d.dirs.ImagesDir(), live, func(p string) error {
		s.log.Warn("removing image folder without an image", "folder", p)
		return s.removeBuildFolder(ctx, p)
	})
}

// removeBuildFolder removes a folder a build may have left: files a build
// sandbox made belong to subordinate ids, which only a sandbox (or root)
// can remove.
func (s *imageService) removeBuildFolder(ctx context.Context, dir string) error {
	ids, err := s.sandboxIDs()
	if err != nil {
		return os.RemoveAll(dir)
	}
	return sandbox.RemoveAll(ctx, ids, dir)
}

// agentCheckParallelism bounds the images read at once by CheckAgent.
const agentCheckParallelism = 4

// CheckAgent is `banger doctor`'s image-agent check: it looks inside every
// image (read-only, with debugfs) for the guest agent. An image that cannot
// be read is reported as such, not as one without the agent; without
// debugfs the check is skipped, with the fix.
func (s *imageService) CheckAgent(ctx context.Context) (api.CheckResult, error) {
	rows, err := store.ListImages(ctx, s.d.store.DB)
	if err != nil {
		return api.CheckResult{}, err
	}
	found := make([]doctor.ImageAgent, len(rows))
	missingTool := make([]error, len(rows))
	sem := make(chan struct{}, agentCheckParallelism)
	var wg sync.WaitGroup
	for i, im := range rows {
		found[i] = doctor.ImageAgent{Name: im.Name, Source: im.Source}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			has, err := imageHasAgent(ctx, im.Path)
			if errors.Is(err, image.ErrMissingTool) {
				missingTool[i] = err
			}
			found[i].HasAgent, found[i].Err = has, err
		})
	}
	wg.Wait()
	if err := errors.Join(missingTool...); err != nil {
		return api.CheckResult{Status: string(doctor.StatusSkip),
			Detail: "cannot look inside images: " + err.Error(), Fix: "sudo apt-get install e2fsprogs"}, nil
	}
	r := doctor.ImageAgentResult(found)
	return api.CheckResult{Status: string(r.Status), Detail: r.Detail, Fix: r.Fix}, nil
}

// imageHasAgent reports whether the image file at path holds the guest
// agent. The file must be a regular file (a row's path is the daemon's own,
// but a file replaced by hand is read as little as possible).
func imageHasAgent(ctx context.Context, path string) (bool, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return false, fmt.Errorf("image file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", path)
	}
	info, err := image.InspectExt4(ctx, path, []string{doctor.AgentImagePath})
	if err != nil {
		return false, err
	}
	return info.Present[doctor.AgentImagePath], nil
}

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
func (s *imageService) Import(ctx context.Context, p api.ImageImportParams) (api.Image, error) {
	if err := vm.ValidateName(p.Name); err != nil {
		return api.Image{}, api.Errorf(api.ErrInvalid, "invalid image name %q: use 1-63 lowercase letters, digits and hyphens", p.Name)
	}
	if !filepath.IsAbs(p.File) {
		return api.Image{}, api.Errorf(api.ErrInvalid, "import file %q: the path must be absolute", p.File)
	}
	if _, err := store.GetImage(ctx, s.d.store.DB, p.Name); err == nil {
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
func (s *imageService) importTarball(ctx context.Context, name, file string) (api.Image, error) {
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
func (s *imageService) importExt4(ctx context.Context, name, file string) (api.Image, error) {
	start := time.Now()
	id := store.NewID()
	dir := filepath.Join(s.d.dirs.ImagesDir(), id)
	if err := os.MkdirAll(s.d.dirs.ImagesDir(), 0o700); err != nil {
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
	if err := store.InsertImage(context.WithoutCancel(ctx), s.d.store.DB, &row); err != nil {
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

// slogWriter turns build progress lines into log records.
type slogWriter struct {
	log   *slog.Logger
	image string
	// onLine, when set, also gets every line.
	onLine func(string)
}

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if l != "" {
			w.log.Info(l, "image", w.image)
			if w.onLine != nil {
				w.onLine(l)
			}
		}
	}
	return len(p), nil
}
