package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vm"
	"github.com/bangerhq/banger/scripts"
)

// Build builds image p.Name from p.From. Only one build of a name runs at a
// time; a failed or cancelled build leaves no file and no row.
func (s *imageService) Build(ctx context.Context, p api.ImageBuildParams) (api.Image, error) {
	if err := vm.ValidateName(p.Name); err != nil {
		return api.Image{}, api.Errorf(api.ErrInvalid, "invalid image name %q: use 1-63 lowercase letters, digits and hyphens", p.Name)
	}
	kind, release, ok := strings.Cut(p.From, ":")
	if !ok || kind != "debian" || release == "" {
		return api.Image{}, api.Errorf(api.ErrInvalid, "--from %q is not a supported source: use debian:RELEASE, for example debian:bookworm", p.From)
	}
	if _, err := store.GetImage(ctx, s.d.store.DB, p.Name); err == nil {
		return api.Image{}, api.Errorf(api.ErrExists, "an image named %q already exists: remove it first with `banger image rm %s`", p.Name, p.Name)
	}
	if err := doctor.Preflight(ctx, s.d.doctorEnv(), doctor.PurposeImageBuild); err != nil {
		return api.Image{}, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	if err := s.d.runtime.CheckAgent(); err != nil {
		return api.Image{}, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	release_, err := s.d.runtime.KernelRelease()
	if err != nil {
		return api.Image{}, api.Errorf(api.ErrPrecondition, "read the runtime kernel release: %w", err)
	}
	s.mu.Lock()
	if s.building == nil {
		s.building = map[string]bool{}
	}
	if s.building[p.Name] {
		s.mu.Unlock()
		return api.Image{}, api.Errorf(api.ErrExists, "image %q is already being built", p.Name)
	}
	s.building[p.Name] = true
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.building, p.Name); s.mu.Unlock() }()

	var idb [6]byte
	rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	dir := filepath.Join(s.d.dirs.ImagesDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	fail := func(err error) (api.Image, error) {
		os.RemoveAll(dir)
		return api.Image{}, err
	}
	scriptDir, err := scripts.WriteTo(dir)
	if err != nil {
		return fail(err)
	}
	out := filepath.Join(dir, "rootfs.ext4")
	start := time.Now()
	s.log.Info("image build started", "image", p.Name, "from", p.From)
	err = image.BuildDebian(ctx, image.DebianOptions{
		Release: release, Output: out, CustomizeScript: filepath.Join(scriptDir, "customize.sh"),
		ModulesDir: s.d.runtime.ModulesDir(), SSHPubKey: s.sshPub, TempDir: dir,
		AgentBinary: s.d.runtime.Agent(),
		Log:         &slogWriter{log: s.log, image: p.Name},
	})
	os.RemoveAll(scriptDir)
	if err != nil {
		return fail(fmt.Errorf("build image %q: %w", p.Name, err))
	}
	st, err := os.Stat(out)
	if err != nil {
		return fail(err)
	}
	row := store.Image{ID: id, Name: p.Name, Source: p.From, Path: out, SizeBytes: st.Size(), KernelRelease: release_}
	if err := store.InsertImage(context.WithoutCancel(ctx), s.d.store.DB, &row); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(api.Errorf(api.ErrExists, "an image named %q already exists", p.Name))
		}
		return fail(err)
	}
	s.log.Info("image built", "image", p.Name, "took", time.Since(start).Round(time.Millisecond))
	return s.view(ctx, row), nil
}

