package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
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
	return api.Image{ID: im.ID, Name: im.Name, Source: im.Source, Path: im.Path, SizeBytes: im.SizeBytes,
		KernelRelease: im.KernelRelease, CreatedAt: im.CreatedAt, UsedBy: users}
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

// Delete removes an image no VM uses.
func (s *imageService) Delete(ctx context.Context, ref string) error {
	im, err := store.GetImage(ctx, s.d.store.DB, ref)
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.ErrNotFound, "no image named %q: see `banger image ls`", ref)
	}
	if err != nil {
		return err
	}
	users, err := store.ImageUsers(ctx, s.d.store.DB, im.ID)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return api.Errorf(api.ErrPrecondition, "image %q is used by VM(s) %s: remove them first", im.Name, strings.Join(users, ", "))
	}
	if err := store.DeleteImage(ctx, s.d.store.DB, im.ID); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Dir(im.Path))
}

// slogWriter turns build progress lines into log records.
type slogWriter struct {
	log   *slog.Logger
	image string
}

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if l != "" {
			w.log.Info(l, "image", w.image)
		}
	}
	return len(p), nil
}
