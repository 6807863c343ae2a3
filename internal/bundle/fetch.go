package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// ErrChecksum is wrapped when a download does not match its expected SHA-256.
var ErrChecksum = errors.New("checksum mismatch")

// Fetcher downloads bundle archives into a cache directory. The zero value
// uses http.DefaultClient, $XDG_CACHE_HOME/banger/downloads and prints no
// progress.
type Fetcher struct {
	// Client makes the requests (tests pass an httptest server's client).
	Client *http.Client
	// CacheDir holds finished downloads and their .part files.
	CacheDir string
	// Progress, when set, receives progress: a redrawn bar when Terminal
	// is true, otherwise a line at the start, every 25 % and the end.
	Progress io.Writer
	Terminal bool
	// AllowHTTP permits checksum files over plain HTTP (tests on loopback);
	// otherwise a published checksum must come over HTTPS.
	AllowHTTP bool
}

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	return http.DefaultClient
}

// DefaultCacheDir is $XDG_CACHE_HOME/banger/downloads (or ~/.cache/...).
func DefaultCacheDir() string { return filepath.Join(cacheHome(), "banger", "downloads") }

func (f *Fetcher) cacheDir() string {
	if f.CacheDir != "" {
		return f.CacheDir
	}
	return DefaultCacheDir()
}

// CachePath is where Download keeps rawURL's file.
func (f *Fetcher) CachePath(rawURL string) string {
	h := sha256.Sum256([]byte(rawURL))
	return filepath.Join(f.cacheDir(), hex.EncodeToString(h[:6])+"-"+urlBase(rawURL))
}

func urlBase(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && path.Base(u.Path) != "/" && path.Base(u.Path) != "." {
		return path.Base(u.Path)
	}
	return "download"
}

// Download fetches rawURL into the cache and returns the path of a file
// whose SHA-256 is want (64 hex digits, required). A cached file that
// already matches is reused. The body goes to PATH.part; an interrupted
// download leaves only the .part file, which the next call resumes with an
// HTTP Range request (or restarts when the server ignores Range). A
// complete .part file that does not match is deleted and downloaded once
// more from scratch; a second mismatch is an error wrapping ErrChecksum.
// The .part file is renamed over PATH only after it verified, so a good
// cached file is never replaced by a partial or corrupt one; what is renamed
// is checked to be the very file that was hashed. Whoever uses the returned
// path verifies the file it opens again (Install, FetchComponent).
func (f *Fetcher) Download(ctx context.Context, rawURL, want string) (string, error) {
	if err := checkHex(want); err != nil || want == "" {
		return "", fmt.Errorf("download %s: expected SHA-256 %q: need 64 lower-case hex digits", rawURL, want)
	}
	final := f.CachePath(rawURL)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("download %s: %w", rawURL, err)
	}
	if sum, err := hashPath(final); err == nil && sum == want {
		f.say("%s: cached %s (SHA-256 %s)", urlBase(rawURL), final, want)
		return final, nil
	}
	part := final + ".part"
	for attempt := 0; ; attempt++ {
		resumed, err := f.get(ctx, rawURL, part)
		if err != nil {
			return "", fmt.Errorf("download %s: %w (the partial download %s is resumed by the next fetch)", rawURL, err, part)
		}
		sum, err := renameIfVerified(part, final, want)
		if err != nil {
			return "", fmt.Errorf("download %s: %w", rawURL, err)
		}
		if sum == want {
			return final, nil
		}
		os.Remove(part)
		if attempt == 0 {
			how := "downloaded"
			if resumed {
				how = "resumed"
			}
			f.say("%s: %s file has SHA-256 %s, expected %s: downloading again from the start", urlBase(rawURL), how, sum, want)
			continue
		}
		return "", fmt.Errorf("download %s: %w: got SHA-256 %s, expected %s (the file was deleted)", rawURL, ErrChecksum, sum, want)
	}
}

// renameIfVerified hashes the file at from through one open descriptor and,
// when its SHA-256 is want, renames it to to, then checks that what arrived
// at to is that same file (not one put at from in between). It returns the
// SHA-256 it found; a mismatch is not an error (the caller decides).
func renameIfVerified(from, to, want string) (string, error) {
	fh, st, err := openRegular(from)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	sum, err := hashOpen(fh)
	if err != nil || sum != want {
		return sum, err
	}
	if testHookAfterHash != nil {
		testHookAfterHash(from)
	}
	if err := os.Rename(from, to); err != nil {
		return "", err
	}
	if now, err := os.Lstat(to); err != nil || !os.SameFile(st, now) {
		os.Remove(to)
		return "", fmt.Errorf("%s was replaced while it was verified: removed %s", from, to)
	}
	return sum, nil
}

// get appends the rest of rawURL to part (or rewrites it when the server
// does not resume) and reports whether it resumed.
func (f *Fetcher) get(ctx context.Context, rawURL, part string) (bool, error) {
	var have int64
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return false, err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	flags := os.O_WRONLY | os.O_CREATE
	resumed := false
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0 && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", have)):
		flags |= os.O_APPEND
		resumed = true
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		// The part is as long as the file or longer: hash it as it is;
		// Download restarts on a mismatch.
		return true, nil
	case resp.StatusCode == http.StatusOK:
		flags |= os.O_TRUNC
		have = 0
	default:
		return false, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	out, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return false, err
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = have + resp.ContentLength
	}
	pw := &progress{f: f, name: urlBase(rawURL), done: have, total: total}
	if resumed {
		f.say("%s: resuming at %s", pw.name, mib(have))
	}
	pw.start()
	_, cerr := io.Copy(out, io.TeeReader(resp.Body, pw))
	pw.finish(cerr)
	if err := out.Sync(); err != nil && cerr == nil {
		cerr = err
	}
	if err := out.Close(); err != nil && cerr == nil {
		cerr = err
	}
	if cerr == nil && total >= 0 && pw.done != total {
		cerr = fmt.Errorf("connection closed after %d of %d bytes", pw.done, total)
	}
	return resumed, cerr
}

func (f *Fetcher) say(format string, a ...any) {
	if f.Progress != nil {
		fmt.Fprintf(f.Progress, "fetch: "+format+"\n", a...)
	}
}

// progress renders download progress.
type progress struct {
	f           *Fetcher
	name        string
	done, total int64
	last        time.Time
	quarter     int64
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (p *progress) start() {
	if p.f.Progress == nil {
		return
	}
	if !p.f.Terminal {
		size := "unknown size"
		if p.total >= 0 {
			size = mib(p.total)
		}
		p.f.say("%s: downloading (%s)", p.name, size)
	}
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.f.Progress == nil {
		return len(b), nil
	}
	if p.f.Terminal {
		if time.Since(p.last) > 100*time.Millisecond {
			p.last = time.Now()
			p.draw()
		}
		return len(b), nil
	}
	if p.total > 0 {
		if q := p.done * 4 / p.total; q > p.quarter && q < 4 {
			p.quarter = q
			p.f.say("%s: %d%% (%s of %s)", p.name, q*25, mib(p.done), mib(p.total))
		}
	}
	return len(b), nil
}

func (p *progress) draw() {
	const width = 30
	if p.total <= 0 {
		fmt.Fprintf(p.f.Progress, "\r%s  %s", p.name, mib(p.done))
		return
	}
	n := int(p.done * width / p.total)
	fmt.Fprintf(p.f.Progress, "\r%s [%s%s] %3d%% %s / %s", p.name,
		strings.Repeat("=", n), strings.Repeat(" ", width-n), p.done*100/p.total, mib(p.done), mib(p.total))
}

func (p *progress) finish(err error) {
	if p.f.Progress == nil {
		return
	}
	if p.f.Terminal {
		p.draw()
		fmt.Fprintln(p.f.Progress)
	}
	if err != nil {
		p.f.say("%s: interrupted after %s: %v", p.name, mib(p.done), err)
	} else if !p.f.Terminal {
		p.f.say("%s: done (%s)", p.name, mib(p.done))
	}
}

// PublishedSHA256 downloads a release's published checksum file (lines of
// `sha256sum` output) and returns the SHA-256 listed for the file named
// name (or the only one listed). It must come over HTTPS unless AllowHTTP.
func (f *Fetcher) PublishedSHA256(ctx context.Context, sumURL, name string) (string, error) {
	if !strings.HasPrefix(sumURL, "https://") && !f.AllowHTTP {
		return "", fmt.Errorf("published checksum %s: not an https:// URL", sumURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sumURL, nil)
	if err != nil {
		return "", fmt.Errorf("published checksum %s: %w", sumURL, err)
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return "", fmt.Errorf("published checksum %s: %w", sumURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("published checksum %s: %s", sumURL, resp.Status)
	}
	var sums []string
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		sum := strings.ToLower(fields[0])
		if checkHex(sum) != nil {
			continue
		}
		if len(fields) >= 2 && path.Base(strings.TrimPrefix(fields[1], "*")) == name {
			return sum, nil
		}
		sums = append(sums, sum)
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("published checksum %s: %w", sumURL, err)
	}
	if len(sums) == 1 {
		return sums[0], nil
	}
	return "", fmt.Errorf("published checksum %s: no SHA-256 for %s in it", sumURL, name)
}

// FetchComponent downloads the manifest's download component name into the
// cache, verifies the archive against the pinned SHA-256 (or the published
// checksum file when none is pinned), takes its files out into a staging
// directory inside dir, checks any pinned file hashes, swaps the
// component's directory into place atomically and records it in dir's lock
// (Verified says pinned or published-checksum). On any error dir is left
// as it was.
func (f *Fetcher) FetchComponent(ctx context.Context, dir string, m *Manifest, name string) (*LockComponent, error) {
	c := m.Components[name]
	if c == nil {
		return nil, fmt.Errorf("fetch %s: no such component in the manifest", name)
	}
	if c.Kind != KindDownload {
		return nil, fmt.Errorf("fetch %s: component kind %s is built locally: run `%s`", name, c.Kind, c.FixCommand())
	}
	want, verified := c.SHA256, VerifiedPinned
	if want == "" {
		sum, err := f.PublishedSHA256(ctx, c.SHA256URL, urlBase(c.URL))
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", name, err)
		}
		want, verified = sum, VerifiedPublished
		f.say("%s: not pinned in the manifest; verifying against the published checksum %s", name, c.SHA256URL)
	}
	archive, err := f.Download(ctx, c.URL, want)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}

	top := ""
	for _, mf := range c.Files {
		t, _, _ := strings.Cut(mf.Path, "/")
		if top != "" && t != top || !strings.Contains(mf.Path, "/") {
			return nil, fmt.Errorf("fetch %s: files must share one directory in the bundle", name)
		}
		top = t
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	stage, err := os.MkdirTemp(dir, ".banger-fetch-*")
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	defer os.RemoveAll(stage)
	if err := extractMembers(archive, want, stage, c.Files); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	lc := &LockComponent{Kind: c.Kind, Version: c.Version, Optional: c.Optional, Fix: c.FixCommand(),
		Verified: verified, Source: c.URL, SourceSHA256: want}
	for _, mf := range c.Files {
		lf, err := hashFile(stage, mf.Path)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", name, err)
		}
		if mf.SHA256 != "" && lf.SHA256 != mf.SHA256 {
			return nil, fmt.Errorf("fetch %s: %w: %s in %s has SHA-256 %s, the manifest pins %s", name, ErrChecksum, mf.From, c.URL, lf.SHA256, mf.SHA256)
		}
		lc.Files = append(lc.Files, lf)
	}
	l, err := ReadLock(dir)
	if errors.Is(err, fs.ErrNotExist) {
		l, err = &Lock{Schema: 1, BundleVersion: m.Version, Components: map[string]*LockComponent{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	if l.Components == nil {
		l.Components = map[string]*LockComponent{}
	}
	l.Components[name] = lc
	if err := swapDir(filepath.Join(stage, top), filepath.Join(dir, top)); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	if err := WriteLock(dir, l); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", name, err)
	}
	return lc, nil
}

// extractMembers copies the archive members named by files' From into
// stage at their Path, with their manifest mode. The archive is opened once,
// its descriptor checked against SHA-256 want and then read: the members
// come from the verified bytes.
func extractMembers(archive, sum, stage string, files []ManifestFile) error {
	fh, err := openVerified(archive, sum)
	if err != nil {
		return err
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		return fmt.Errorf("%s: %w", archive, err)
	}
	want := map[string]ManifestFile{}
	for _, mf := range files {
		want[path.Clean(mf.From)] = mf
	}
	tr := tar.NewReader(gz)
	for len(want) > 0 {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		mf, ok := want[path.Clean(strings.TrimPrefix(h.Name, "./"))]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		delete(want, path.Clean(mf.From))
		dst := filepath.Join(stage, filepath.FromSlash(mf.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := writeFrom(dst, tr, mf.FileMode()); err != nil {
			return err
		}
	}
	for from := range want {
		return fmt.Errorf("%s has no member %s", archive, from)
	}
	return nil
}

func writeFrom(dst string, r io.Reader, mode os.FileMode) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
