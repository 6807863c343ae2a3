// Package buildcache keeps built images keyed by the inputs that made them,
// so that rebuilding an unchanged image costs a link instead of a build.
//
// A key is the SHA-256 of the canonical JSON of Inputs. An entry is a folder
// <dir>/<key>/ holding rootfs.ext4 and meta.json. Images are never written
// after they are built (VM disks are copies), so an entry and the images made
// from it share one inode when they are on the same file system: the cache
// then costs no space until an image is removed.
package buildcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/image"
)

// formatVersion is part of every key: bump it when what a build produces
// changes in a way the other inputs do not capture.
const formatVersion = 1

// Inputs are everything a build's result depends on. Two builds with equal
// Inputs produce interchangeable images.
type Inputs struct {
	// Source identifies the base: its content digest when it has one (an
	// OCI manifest digest, so the same image reached from a registry, a
	// layout or an archive shares a key), else the source as written
	// ("debian:bookworm").
	Source string `json:"source"`
	// Script is the digest of the customize script and the guest files.
	Script string `json:"script"`
	// Kernel identifies the runtime kernel whose modules go into the image.
	Kernel string `json:"kernel"`
	// Agent identifies the guest agent binary.
	Agent string `json:"agent"`
	// SSHPubKey is the daemon's key, written into authorized_keys.
	SSHPubKey string `json:"ssh_pubkey"`
	// Options are any other build options (mirror, packages, platform).
	Options map[string]string `json:"options,omitempty"`
}

// Key returns the cache key of in: 64 hex digits.
func (in Inputs) Key() string {
	b, err := json.Marshal(struct {
		Version int `json:"v"`
		Inputs
	}{formatVersion, in}) // encoding/json sorts map keys: canonical
	if err != nil {
		panic(err) // strings and a map of strings always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Meta is stored beside a cached image.
type Meta struct {
	Key           string    `json:"key"`
	Source        string    `json:"source"`
	Digest        string    `json:"digest,omitempty"`
	KernelRelease string    `json:"kernel_release"`
	BuildSeconds  float64   `json:"build_seconds"`
	CreatedAt     time.Time `json:"created_at"`
}

// Cache is a build cache rooted at Dir (created on first Put).
type Cache struct {
	Dir string
}

const imageName, metaName = "rootfs.ext4", "meta.json"

// staleAfter is how long Prune leaves what an unfinished Put left.
const staleAfter = time.Hour

func (c Cache) entry(key string) string { return filepath.Join(c.Dir, key) }

// Get places the cached image for key at dst (a hard link when possible,
// else a sparse copy) and returns its Meta. ok is false, with a nil error,
// when there is no complete entry for key.
func (c Cache) Get(key, dst string) (m Meta, ok bool, err error) {
	dir := c.entry(key)
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if errors.Is(err, os.ErrNotExist) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("build cache: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Key != key {
		// A damaged entry is a miss; the build that follows replaces it.
		return Meta{}, false, nil
	}
	if err := linkOrCopy(filepath.Join(dir, imageName), dst); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Meta{}, false, nil
		}
		return Meta{}, false, fmt.Errorf("build cache: %w", err)
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, metaName), now, now) // recency, for Prune
	return m, true, nil
}

// Put stores the image at src under m.Key, replacing any entry for that key.
// The entry appears whole or not at all.
func (c Cache) Put(src string, m Meta) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	tmp, err := os.MkdirTemp(c.Dir, ".put-*")
	if err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := linkOrCopy(src, filepath.Join(tmp, imageName)); err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, metaName), b, 0o600); err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	dir := c.entry(m.Key)
	old := dir + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("build cache: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	return os.RemoveAll(old)
}

// Remove deletes the entry for key, if any.
func (c Cache) Remove(key string) error {
	return os.RemoveAll(c.entry(key))
}

// Prune keeps the keep most recently used entries whose image no live image
// shares (link count 1) and removes the older ones; entries an image still
// links to cost no space and are kept. It also removes what a Put that
// never finished left (a daemon killed during it): its temporary folder,
// or the entry it was replacing, once untouched for staleAfter (a Put in
// progress, perhaps another daemon's, takes seconds). It returns the
// number of folders removed.
func (c Cache) Prune(keep int) (int, error) {
	ents, err := os.ReadDir(c.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("build cache: %w", err)
	}
	type orphan struct {
		key  string
		used time.Time
	}
	var orphans []orphan
	n := 0
	for _, e := range ents {
		if e.IsDir() && (strings.HasPrefix(e.Name(), ".put-") || strings.HasSuffix(e.Name(), ".old")) {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAfter {
				if err := os.RemoveAll(filepath.Join(c.Dir, e.Name())); err != nil {
					return n, fmt.Errorf("build cache: %w", err)
				}
				n++
			}
			continue
		}
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(c.Dir, e.Name(), imageName), &st); err != nil || st.Nlink > 1 {
			continue
		}
		mi, err := os.Stat(filepath.Join(c.Dir, e.Name(), metaName))
		if err != nil {
			continue
		}
		orphans = append(orphans, orphan{e.Name(), mi.ModTime()})
	}
	slices.SortFunc(orphans, func(a, b orphan) int { return b.used.Compare(a.used) })
	for i := keep; i < len(orphans); i++ {
		if err := c.Remove(orphans[i].key); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// linkOrCopy makes dst hold src's content: a hard link, or, across file
// systems, a reflink or hole-preserving copy (image.CloneDisk).
func linkOrCopy(src, dst string) error {
	err := os.Link(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EPERM) {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	return image.CloneDisk(context.Background(), src, dst, st.Size())
}
