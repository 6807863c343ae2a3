// Package imagesvc is the image service: it builds images (from Debian
// or an OCI source, in the build sandbox, through the build cache),
// imports them (an ext4 file or a root file system tarball), lists and
// removes them, checks them for the guest agent, and at daemon start
// removes what an earlier daemon's builds left. Like the VM service
// (package vm) it has its own Config; the daemon's method table calls it.
//
// Each operation does its database write and its disk work as one unit:
// a failed or cancelled build or import leaves no folder and no row.
package imagesvc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/image/tarlimit"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/subid"
)

// Config is what the service needs from the daemon, resolved once at its
// start.
type Config struct {
	Dirs    paths.Dirs
	Runtime bundle.Dir
	// SSHPublicKey is the daemon's key, installed in every image.
	SSHPublicKey string
	// Owner is the token this daemon's build sandboxes carry
	// (sandbox.SetOwner): Sweep ends what an earlier daemon's left.
	Owner string
	// Limits bound what a build may write (config [image]).
	Limits tarlimit.Limits
	// DNS is the name server builds are given (config network.dns); ""
	// takes the host's (see buildDNS).
	DNS string
	// Bridge and Subnet are the VMs' network, which builds join for the
	// packages customize.sh installs; Network guards their ports. A nil
	// Network builds without network.
	Bridge  string
	Subnet  netip.Prefix
	Network Network
	// Preflight runs the host checks an image build needs (`banger
	// doctor`'s, shared); nil skips them.
	Preflight func(ctx context.Context) error
}

// Network is the host networking builds need: the bridge, and the guard
// of a bridge port (the daemon's, which owns the guest network policy).
type Network interface {
	EnsureBridge(ctx context.Context) error
	GuardPort(p network.Port) error
	UnguardPort(name string) error
}

// Service implements the image methods of the daemon.
type Service struct {
	cfg   Config
	store *store.Store
	log   *slog.Logger

	mu       sync.Mutex
	building map[string]bool // names being built or imported
}

// New returns the image service over st.
func New(cfg Config, st *store.Store, log *slog.Logger) *Service {
	return &Service{cfg: cfg, store: st, log: log.With("component", "image")}
}

func (s *Service) view(ctx context.Context, im store.Image) api.Image {
	users, _ := store.ImageUsers(ctx, s.store.DB, im.ID)
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
func (s *Service) List(ctx context.Context) ([]api.Image, error) {
	rows, err := store.ListImages(ctx, s.store.DB)
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
func (s *Service) Get(ctx context.Context, ref string) (api.Image, error) {
	im, err := store.GetImage(ctx, s.store.DB, ref)
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
// that never read the image file again, or overlays of a warm template's
// disk, which stays while they do (see package vm), so the file goes and
// the row stays as a tombstone (store.MarkImageRemoved) until the last of
// those VMs is deleted.
//
// The row changes first, in one transaction with the check for users, and
// the files go after: a daemon that dies in between leaves only a folder
// without a row, which the next start sweeps (sweepImageFolders).
func (s *Service) Delete(ctx context.Context, p api.ImageDeleteParams) (api.Image, error) {
	var im store.Image
	var users []string
	err := s.store.Tx(ctx, func(tx *sql.Tx) error {
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
			return api.Errorf(api.ErrPrecondition, "image %q is used by VM(s) %s: remove them first, or use `banger image rm --force %s`, which removes it anyway (VM disks do not need the image: they are copies, or overlays of a warm template's disk, which stays until its last clone is removed)",
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
func (s *Service) removeFiles(im store.Image) error {
	dir := filepath.Dir(im.Path)
	if filepath.Dir(dir) != filepath.Clean(s.cfg.Dirs.ImagesDir()) {
		s.log.Warn("image file is outside the images directory; leaving it", "image", im.Name, "path", im.Path)
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("image %q is deleted but its folder is not (the next daemon start retries): %w", im.Name, err)
	}
	return nil
}

// Sweep runs at daemon start, before any request. First it makes sure
// nothing of an earlier daemon's builds still runs: their sandboxes and
// mmdebstrap die with that daemon, but maybe not yet, and a folder must not
// be removed while something writes into it. Then it runs
// sweepImageFolders. It logs what it could not do: a leftover folder wastes
// space but breaks nothing.
func (s *Service) Sweep(ctx context.Context) {
	n, err := sandbox.KillOwned(s.cfg.Owner, 15*time.Second)
	if n > 0 {
		s.log.Warn("killed processes an earlier daemon's image builds left", "processes", n)
	}
	if err != nil {
		s.log.Warn("image build processes of an earlier daemon", "err", err)
		// Their folders stay until the next start.
		return
	}
	if n, err := store.DeleteBuildLeases(ctx, s.store.DB); err != nil || n > 0 {
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
func (s *Service) sweepImageFolders(ctx context.Context) error {
	if err := store.DeleteUnusedRemovedImages(ctx, s.store.DB); err != nil {
		return err
	}
	rows, err := store.ListImages(ctx, s.store.DB)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, r := range rows {
		live[r.ID] = true
		live[filepath.Base(filepath.Dir(r.Path))] = true
	}
	return store.SweepFolders(s.cfg.Dirs.ImagesDir(), live, func(p string) error {
		s.log.Warn("removing image folder without an image", "folder", p)
		return s.removeBuildFolder(ctx, p)
	})
}

// removeBuildFolder removes a folder a build may have left: files a build
// sandbox made belong to subordinate ids, which only a sandbox (or root)
// can remove.
func (s *Service) removeBuildFolder(ctx context.Context, dir string) error {
	ids, err := s.sandboxIDs()
	if err != nil {
		return os.RemoveAll(dir)
	}
	return sandbox.RemoveAll(ctx, ids, dir)
}

// agentCheckParallelism bounds the images read at once by CheckAgent.
const agentCheckParallelism = 4

// CheckAgent is `banger doctor`'s image-agent check: it looks inside every
// image for the guest agent, with e2fsck and debugfs run in a build
// sandbox as for an import (image.InspectImported: an imported image's
// file system may be crafted against them). An image that cannot
// be read is reported as such, not as one without the agent; without
// debugfs the check is skipped, with the fix.
func (s *Service) CheckAgent(ctx context.Context) (api.CheckResult, error) {
	rows, err := store.ListImages(ctx, s.store.DB)
	if err != nil {
		return api.CheckResult{}, err
	}
	ids, err := s.sandboxIDs()
	if err != nil {
		return api.CheckResult{Status: string(doctor.StatusSkip), Detail: "cannot look inside images: " + err.Error(),
			Fix: "give this user subordinate ids (`make deps` gives root its range)"}, nil
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
			has, err := imageHasAgent(ctx, ids, im.Path)
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
func imageHasAgent(ctx context.Context, ids subid.IDs, path string) (bool, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return false, fmt.Errorf("image file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", path)
	}
	info, err := image.InspectImported(ctx, ids, path, []string{doctor.AgentImagePath})
	if err != nil {
		return false, err
	}
	return info.Present[doctor.AgentImagePath], nil
}
