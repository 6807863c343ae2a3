package imagesvc

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/buildcache"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/image/oci"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/units"
	"github.com/bangerhq/banger/internal/vm"
	"github.com/bangerhq/banger/scripts"
)

// cacheKeepOrphans is how many cached builds that no image shares any more
// are kept (most recently used first); the others are pruned after a build.
const cacheKeepOrphans = 3

// buildSource is a parsed --from.
type buildSource struct {
	raw     string
	release string     // debian:RELEASE
	oci     oci.Source // oci:, oci-layout:, docker-archive:
}

func parseBuildSource(from string) (buildSource, error) {
	if release, ok := strings.CutPrefix(from, "debian:"); ok {
		if release == "" || strings.ContainsAny(release, "/: ") {
			return buildSource{}, api.Errorf(api.ErrInvalid, "--from %q: name a Debian release, for example debian:bookworm", from)
		}
		if err := image.CheckDebianRelease(release); err != nil {
			return buildSource{}, api.Errorf(api.ErrInvalid, "--from %q: %v", from, err)
		}
		return buildSource{raw: from, release: release}, nil
	}
	src, err := oci.ParseSource(from)
	if err != nil {
		return buildSource{}, api.Errorf(api.ErrInvalid, "--from %q is not a supported source (%v): use debian:RELEASE, oci:REF, oci-layout:DIR[:TAG|@DIGEST] or docker-archive:FILE", from, err)
	}
	if src.Path != "" && !filepath.IsAbs(src.Path) {
		return buildSource{}, api.Errorf(api.ErrInvalid, "--from %q: the path must be absolute (the CLI makes it so)", from)
	}
	return buildSource{raw: from, oci: src}, nil
}

// Build builds image p.Name from p.From, or takes it from the build cache
// when an earlier build had the same inputs (unless p.NoCache). Only one
// build of a name runs at a time; a failed or cancelled build leaves no
// file, no temporary tree and no row.
func (s *Service) Build(ctx context.Context, p api.ImageBuildParams) (api.Image, error) {
	start := time.Now()
	if err := vm.ValidateName(p.Name); err != nil {
		return api.Image{}, api.Errorf(api.ErrInvalid, "invalid image name %q: use 1-63 lowercase letters, digits and hyphens", p.Name)
	}
	src, err := parseBuildSource(p.From)
	if err != nil {
		return api.Image{}, err
	}
	if _, err := store.GetImage(ctx, s.store.DB, p.Name); err == nil {
		return api.Image{}, api.Errorf(api.ErrExists, "an image named %q already exists: remove it first with `banger image rm %s`", p.Name, p.Name)
	}
	if s.cfg.Preflight != nil {
		if err := s.cfg.Preflight(ctx); err != nil {
			return api.Image{}, api.Errorf(api.ErrPrecondition, "%w", err)
		}
	}
	kernelRelease, err := s.runtimeReady()
	if err != nil {
		return api.Image{}, err
	}
	unlock, err := s.claim(p.Name)
	if err != nil {
		return api.Image{}, err
	}
	defer unlock()

	// Resolve the source to what identifies its content.
	var img ociImage
	inputs, err := s.inputs(kernelRelease)
	if err != nil {
		return api.Image{}, err
	}
	inputs.Source = src.raw
	if src.release != "" {
		inputs.Options = map[string]string{"mirror": image.DefaultMirror, "packages": strings.Join(image.BasePackages, ",")}
	} else {
		s.progress(ctx, api.Progress{Phase: "resolve", Message: "resolving " + src.oci.String()})
		if img, err = s.openOCI(ctx, src.oci); err != nil {
			return api.Image{}, err
		}
		inputs.Source = img.digest
		inputs.Options = map[string]string{"platform": "linux/amd64"}
	}
	return s.produce(ctx, production{
		name: p.Name, source: p.From, digest: img.digest, kernelRelease: kernelRelease,
		key: inputs.Key(), noCache: p.NoCache, start: start,
		build: func(ctx context.Context, dir, out string) error { return s.build(ctx, p.Name, src, img, dir, out) },
	})
}

// buildFromRootfsTar makes image name from the root file system tarball
// file (plain, gzip, xz or zstd), whose content digest is digest, the way an
// OCI image is built. The caller has validated and claimed name.
func (s *Service) buildFromRootfsTar(ctx context.Context, name, file, digest string) (api.Image, error) {
	start := time.Now()
	if err := image.CheckRootfsTools(); err != nil {
		return api.Image{}, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	kernelRelease, err := s.runtimeReady()
	if err != nil {
		return api.Image{}, err
	}
	inputs, err := s.inputs(kernelRelease)
	if err != nil {
		return api.Image{}, err
	}
	inputs.Source = digest
	inputs.Options = map[string]string{"import": "rootfs-tar"}
	return s.produce(ctx, production{
		name: name, source: "import:" + filepath.Base(file), digest: digest, kernelRelease: kernelRelease,
		key: inputs.Key(), start: start,
		build: func(ctx context.Context, dir, out string) error {
			return s.buildFromTar(ctx, name, func(ctx context.Context, w io.Writer) error { return decompressTo(ctx, file, w) }, dir, out)
		},
	})
}

// production is one image to make: from the build cache when it holds key
// (and noCache is false), else by build.
type production struct {
	name, source, digest, kernelRelease, key string
	noCache                                  bool
	start                                    time.Time
	// build writes the image to out, with temporary files in dir.
	build func(ctx context.Context, dir, out string) error
}

// produce makes the image folder, fills it from the cache or by building,
// records the row and keeps a fresh build in the cache. Any failure removes
// the folder; no row is left.
func (s *Service) produce(ctx context.Context, p production) (api.Image, error) {
	id := store.NewID()
	dir := filepath.Join(s.cfg.Dirs.ImagesDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	fail := func(err error) (api.Image, error) {
		if rmErr := s.removeBuildFolder(context.WithoutCancel(ctx), dir); rmErr != nil {
			s.log.Warn("remove the folder of a failed build (the next daemon start retries)", "folder", dir, "err", rmErr)
		}
		return api.Image{}, err
	}
	out := filepath.Join(dir, "rootfs.ext4")
	cache := s.cache()
	hit := false
	if !p.noCache {
		if _, ok, err := cache.Get(p.key, out); err != nil {
			s.log.Warn("build cache unreadable; building", "image", p.name, "err", err)
		} else if ok {
			hit = true
			s.progress(ctx, api.Progress{Phase: "cache", Message: "unchanged inputs: reusing the cached build " + p.key[:12]})
		}
	}
	if !hit {
		s.log.Info("image build started", "image", p.name, "from", p.source, "cache_key", p.key[:12])
		if err := p.build(ctx, dir, out); err != nil {
			if ctx.Err() != nil {
				return fail(fmt.Errorf("build image %q: cancelled: %w", p.name, ctx.Err()))
			}
			return fail(fmt.Errorf("build image %q: %w", p.name, err))
		}
	}
	st, err := os.Stat(out)
	if err != nil {
		return fail(err)
	}
	row := store.Image{ID: id, Name: p.name, Source: p.source, Path: out, SizeBytes: st.Size(),
		KernelRelease: p.kernelRelease, Digest: p.digest, CacheKey: p.key, Cached: hit,
		BuildSeconds: time.Since(p.start).Seconds()}
	if err := store.InsertImage(context.WithoutCancel(ctx), s.store.DB, &row); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(api.Errorf(api.ErrExists, "an image named %q already exists", p.name))
		}
		return fail(err)
	}
	if !hit {
		m := buildcache.Meta{Key: p.key, Source: p.source, Digest: p.digest, KernelRelease: p.kernelRelease,
			BuildSeconds: row.BuildSeconds, CreatedAt: time.Now().UTC()}
		if err := cache.Put(out, m); err != nil {
			s.log.Warn("could not keep the build in the cache", "image", p.name, "err", err)
		}
		if n, err := cache.Prune(cacheKeepOrphans); err != nil || n > 0 {
			s.log.Info("build cache pruned", "removed", n, "err", err)
		}
	}
	s.log.Info("image ready", "image", p.name, "cached", hit, "took", time.Since(p.start).Round(time.Millisecond))
	return s.view(ctx, row), nil
}

// decompressTo writes the tar stream in file (plain, or gzip, zstd or xz
// compressed, told by its first bytes) to w.
func decompressTo(ctx context.Context, file string, w io.Writer) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [6]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	m := magic[:n]
	var r io.Reader = f
	switch {
	case bytes.HasPrefix(m, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(m, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(m, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		// No xz decoder in the standard library; xz-utils is everywhere.
		cmd := exec.CommandContext(ctx, "xz", "-dc")
		cmd.Stdin, cmd.Stdout = f, w
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("xz -dc %s: %w: %s", file, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	_, err = io.Copy(w, readerCtx{ctx, r})
	return err
}

// readerCtx stops reading once ctx is done.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// runtimeReady checks that the runtime bundle has the guest agent every
// image gets, and returns the release of its kernel (whose modules too).
func (s *Service) runtimeReady() (string, error) {
	if err := s.cfg.Runtime.CheckAgent(); err != nil {
		return "", api.Errorf(api.ErrPrecondition, "%w", err)
	}
	release, err := s.cfg.Runtime.KernelRelease()
	if err != nil {
		return "", api.Errorf(api.ErrPrecondition, "read the runtime kernel release: %w", err)
	}
	return release, nil
}

func (s *Service) cache() buildcache.Cache {
	return buildcache.Cache{Dir: filepath.Join(s.cfg.Dirs.Cache, "builds")}
}

// progress reports p to the client (when it asked for progress) and logs
// phase changes.
func (s *Service) progress(ctx context.Context, p api.Progress) {
	if p.Message != "" && p.Done == 0 {
		s.log.Info(p.Message, "phase", p.Phase)
	}
	progress.Report(ctx, p)
}

// inputs returns the cache inputs that come from this daemon: the scripts,
// the runtime's kernel and agent, the SSH key. The runtime parts are
// identified by the bundle lock's checksums (verified before every build)
// or, without a lock, by hashing the files.
func (s *Service) inputs(kernelRelease string) (buildcache.Inputs, error) {
	in := buildcache.Inputs{Script: scripts.Digest(), SSHPubKey: s.cfg.SSHPublicKey}
	if lock, err := bundle.ReadLock(s.cfg.Runtime.Path); err == nil && lock.Components["kernel"] != nil && lock.Components["agent"] != nil {
		in.Kernel = kernelRelease + " " + lockDigest(lock.Components["kernel"])
		in.Agent = lockDigest(lock.Components["agent"])
		return in, nil
	}
	k, err := treeDigest(s.cfg.Runtime.ModulesDir())
	if err != nil {
		return in, fmt.Errorf("identify the runtime kernel modules: %w", err)
	}
	a, err := treeDigest(s.cfg.Runtime.Agent())
	if err != nil {
		return in, fmt.Errorf("identify the guest agent: %w", err)
	}
	in.Kernel, in.Agent = kernelRelease+" "+k, a
	return in, nil
}

func lockDigest(c *bundle.LockComponent) string {
	h := sha256.New()
	files := append([]bundle.LockFile(nil), c.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		fmt.Fprintf(h, "%s %s\n", f.Path, f.SHA256)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// treeDigest hashes the regular files under root (or root itself), with
// their relative names.
func treeDigest(root string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s\x00", rel)
		_, err = io.Copy(h, f)
		return err
	})
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), err
}

// ociImage is an opened OCI source.
type ociImage struct {
	img    v1.Image
	digest string
}

func (s *Service) openOCI(ctx context.Context, src oci.Source) (ociImage, error) {
	if err := image.CheckRootfsTools(); err != nil {
		return ociImage{}, api.Errorf(api.ErrPrecondition, "%w", err)
	}
	img, digest, err := oci.Open(ctx, src, oci.Options{LayerDir: filepath.Join(s.cfg.Dirs.Cache, "layers")})
	if err != nil {
		if errors.Is(err, oci.ErrPlatform) {
			return ociImage{}, api.Errorf(api.ErrInvalid, "%v: banger runs linux/amd64 guests here; build from an image for that platform", err)
		}
		if ctx.Err() != nil {
			return ociImage{}, ctx.Err()
		}
		return ociImage{}, api.Errorf(api.ErrInvalid, "%v", err)
	}
	return ociImage{img: img, digest: digest}, nil
}

// build runs the build for src into out, with temporary files in dir.
func (s *Service) build(ctx context.Context, name string, src buildSource, img ociImage, dir, out string) error {
	if src.release != "" {
		o, done, err := s.buildOptions(ctx, name, dir, out, "bootstrap")
		if err != nil {
			return err
		}
		defer done()
		return image.BuildDebian(ctx, image.DebianOptions{Release: src.release, RootfsOptions: o})
	}
	limits := s.cfg.Limits
	flatten := func(ctx context.Context, w io.Writer) error {
		// The first pass (pulling, for a registry) learns each layer's
		// uncompressed size: the second pass's totals.
		sizes := map[int]int64{}
		return oci.FlattenContext(ctx, img.img, w, limits, func(e oci.Event) {
			p := api.Progress{Phase: "pull", Layer: e.Layer, Layers: e.Layers, Done: e.Bytes}
			switch {
			case e.Phase == oci.PhaseScan && e.Done:
				sizes[e.Layer] = e.Bytes
			case e.Phase == oci.PhaseWrite:
				p.Phase, p.Total = "flatten", sizes[e.Layer]
			}
			if e.Done {
				p.Message = fmt.Sprintf("layer %d/%d: %s", e.Layer, e.Layers, units.IEC(e.Bytes))
			}
			s.progress(ctx, p)
		})
	}
	return s.buildFromTar(ctx, name, flatten, dir, out)
}

// buildFromTar builds out from a root file system tar stream with
// image.BuildRootfs and the embedded customize script.
func (s *Service) buildFromTar(ctx context.Context, name string, tarStream func(context.Context, io.Writer) error, dir, out string) error {
	o, done, err := s.buildOptions(ctx, name, dir, out, "extract")
	if err != nil {
		return err
	}
	defer done()
	o.Tar = tarStream
	return image.BuildRootfs(ctx, o)
}

// buildOptions are the settings every build of this daemon shares: the
// embedded scripts (written into dir; done removes them), the runtime's
// modules and agent, the SSH key, the sandbox's ids, the limits, the log
// and the progress phases (starting with firstPhase).
func (s *Service) buildOptions(ctx context.Context, name, dir, out, firstPhase string) (image.RootfsOptions, func(), error) {
	ids, err := s.sandboxIDs()
	if err != nil {
		return image.RootfsOptions{}, nil, err
	}
	scriptDir, err := scripts.WriteTo(dir)
	if err != nil {
		return image.RootfsOptions{}, nil, err
	}
	phase := newPhase(firstPhase)
	netw, release := s.buildNet(ctx, name)
	return image.RootfsOptions{
		Output: out, Scripts: scriptDir, ModulesDir: s.cfg.Runtime.ModulesDir(), SSHPubKey: s.cfg.SSHPublicKey,
		AgentBinary: s.cfg.Runtime.Agent(), IDs: ids, Limits: s.cfg.Limits, TempDir: dir,
		Net: netw, DNS: buildDNS(s.cfg.DNS),
		Log:   s.buildLog(ctx, name, phase),
		Phase: func(p, msg string) { phase.Store(&p); s.progress(ctx, api.Progress{Phase: p, Message: msg}) },
	}, func() { release(); os.RemoveAll(scriptDir) }, nil
}

// sandboxIDs are the subordinate ids of the daemon's user, which build
// sandboxes map (also when the daemon is root).
func (s *Service) sandboxIDs() (subid.IDs, error) {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	ids, err := subid.Lookup(subid.System, name, os.Getuid())
	if err != nil {
		return subid.IDs{}, api.Errorf(api.ErrPrecondition, "image builds run in a sandbox of subordinate ids: %v", err)
	}
	return ids, nil
}

// buildLog is the Log of a build: every line goes to the daemon log, and to
// the client as a progress message of the current phase (set by the build
// while its output is read on another goroutine).
func (s *Service) buildLog(ctx context.Context, name string, phase *atomic.Pointer[string]) io.Writer {
	return &slogWriter{log: s.log, image: name, onLine: func(l string) {
		progress.Report(ctx, api.Progress{Phase: *phase.Load(), Message: l})
	}}
}

func newPhase(p string) *atomic.Pointer[string] {
	var ph atomic.Pointer[string]
	ph.Store(&p)
	return &ph
}

// claim reserves name for one build or import at a time; release frees it.
func (s *Service) claim(name string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.building == nil {
		s.building = map[string]bool{}
	}
	if s.building[name] {
		return nil, api.Errorf(api.ErrExists, "image %q is already being built or imported", name)
	}
	s.building[name] = true
	return func() { s.mu.Lock(); delete(s.building, name); s.mu.Unlock() }, nil
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
