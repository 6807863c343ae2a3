package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

// server serves files from a map over HTTPS on loopback. cut makes the
// next response for a path stop after half its body and drop the
// connection.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	cut      map[string]bool
	requests []string
}

func newServer(t *testing.T) *server {
	s := &server{files: map[string][]byte{}, cut: map[string]bool{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b, ok := s.files[r.URL.Path]
		cut := s.cut[r.URL.Path]
		delete(s.cut, r.URL.Path)
		s.requests = append(s.requests, r.URL.Path+" "+r.Header.Get("Range"))
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if cut {
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.WriteHeader(http.StatusOK)
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, r.URL.Path, time.Unix(0, 0), bytes.NewReader(b))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) put(p string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[p] = b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (s *server) fetcher(t *testing.T) (*Fetcher, *bytes.Buffer) {
	var log bytes.Buffer
	return &Fetcher{Client: s.Client(), CacheDir: filepath.Join(t.TempDir(), "downloads"), Progress: &log}, &log
}

func TestDownloadInterruptedThenResumed(t *testing.T) {
	s := newServer(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	s.put("/big.bin", body)
	s.cut["/big.bin"] = true
	f, log := s.fetcher(t)
	_, err := f.Download(context.Background(), s.URL+"/big.bin", sum(body))
	if err == nil {
		t.Fatal("interrupted download succeeded")
	}
	final := f.CachePath(s.URL + "/big.bin")
	if _, err := os.Stat(final); !os.IsNotExist(err) {
		t.Fatalf("a file is in place after an interrupted download: %v", err)
	}
	if st, err := os.Stat(final + ".part"); err != nil || st.Size() == 0 || st.Size() >= int64(len(body)) {
		t.Fatalf("want a partial .part file: %v %v", st, err)
	}
	p, err := f.Download(context.Background(), s.URL+"/big.bin", sum(body))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := hashPath(p); got != sum(body) {
		t.Fatal("resumed file differs")
	}
	if !strings.Contains(log.String(), "resuming at") {
		t.Errorf("no resume in the log:\n%s", log.String())
	}
	if last := s.requests[len(s.requests)-1]; !strings.Contains(last, "bytes=") {
		t.Errorf("second request did not ask for a range: %v", s.requests)
	}
	if _, err := os.Stat(final + ".part"); !os.IsNotExist(err) {
		t.Error(".part left behind")
	}
	// Cached now: no new request.
	n := len(s.requests)
	if _, err := f.Download(context.Background(), s.URL+"/big.bin", sum(body)); err != nil || len(s.requests) != n {
		t.Fatalf("cache not used: %v, %d requests", err, len(s.requests)-n)
	}
}

// A corrupt .part (or a server that changed the file) is re-downloaded
// from scratch; a server that serves the wrong bytes fails with
// ErrChecksum and leaves nothing behind.
func TestDownloadMismatch(t *testing.T) {
	s := newServer(t)
	body := []byte(strings.Repeat("x", 4096))
	s.put("/f", body)
	f, _ := s.fetcher(t)
	final := f.CachePath(s.URL + "/f")
	os.MkdirAll(filepath.Dir(final), 0o755)
	os.WriteFile(final+".part", []byte("garbage"), 0o644)
	if _, err := f.Download(context.Background(), s.URL+"/f", sum(body)); err != nil {
		t.Fatalf("corrupt .part not recovered: %v", err)
	}
	_, err := f.Download(context.Background(), s.URL+"/f2", sum(body))
	if err == nil {
		t.Fatal("404 succeeded")
	}
	s.put("/f3", []byte("other"))
	_, err = f.Download(context.Background(), s.URL+"/f3", sum(body))
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(f.CachePath(s.URL + "/f3")); !os.IsNotExist(err) {
		t.Error("mismatching file kept")
	}
	if _, err := os.Stat(f.CachePath(s.URL+"/f3") + ".part"); !os.IsNotExist(err) {
		t.Error("mismatching .part kept")
	}
}

func tgz(t *testing.T, files map[string][]byte) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for n, b := range files {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// The firecracker component: a release tarball whose SHA-256 is not pinned,
// verified against the published .sha256.txt beside it.
func TestFetchFirecrackerPublishedChecksum(t *testing.T) {
	s := newServer(t)
	fc := []byte("\x7fELF firecracker v1.16.1")
	jailer := []byte("\x7fELF jailer v1.16.1")
	archive := tgz(t, map[string][]byte{
		"release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64": fc,
		"release-v1.16.1-x86_64/jailer-v1.16.1-x86_64":      jailer,
		"release-v1.16.1-x86_64/SHA256SUMS":                 []byte("..."),
	})
	s.put("/v1.16.1/firecracker-v1.16.1-x86_64.tgz", archive)
	s.put("/v1.16.1/firecracker-v1.16.1-x86_64.tgz.sha256.txt", []byte(sum(archive)+"  firecracker-v1.16.1-x86_64.tgz\n"))

	b, err := os.ReadFile(filepath.Join("..", "..", ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(bytes.ReplaceAll(b, []byte("https://github.com/firecracker-microvm/firecracker/releases/download"), []byte(s.URL)))
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := makeBundle(t)
	f, log := s.fetcher(t)
	lc, err := f.FetchComponent(context.Background(), dir, m, "firecracker")
	if err != nil {
		t.Fatal(err)
	}
	if lc.Verified != VerifiedPublished || lc.SourceSHA256 != sum(archive) {
		t.Errorf("lock entry %+v", lc)
	}
	if !strings.Contains(log.String(), "published checksum") {
		t.Errorf("log does not say published checksum:\n%s", log)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "firecracker/firecracker"))
	if !bytes.Equal(got, fc) {
		t.Fatal("firecracker binary differs")
	}
	if st, _ := os.Stat(filepath.Join(dir, "firecracker/jailer")); st == nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("jailer: %v", st)
	}
	if err := Verify(context.Background(), Dir{Path: dir}); err != nil {
		t.Fatal(err)
	}
	r, _ := Inspect(context.Background(), Dir{Path: dir}, InspectOptions{})
	for _, c := range r.Components {
		if c.State != StatePresent {
			t.Errorf("%s: %s", c.Name, c.State)
		}
	}
	// Fetching again swaps the directory atomically and still verifies.
	if _, err := f.FetchComponent(context.Background(), dir, m, "firecracker"); err != nil {
		t.Fatal(err)
	}
	if err := Verify(context.Background(), Dir{Path: dir}); err != nil {
		t.Fatal(err)
	}

	// A tarball that does not match its published checksum is refused and
	// leaves the bundle as it was.
	s.put("/v1.16.1/firecracker-v1.16.1-x86_64.tgz.sha256.txt", []byte(sum([]byte("other"))+"  firecracker-v1.16.1-x86_64.tgz\n"))
	f2, _ := s.fetcher(t)
	if _, err := f2.FetchComponent(context.Background(), dir, m, "firecracker"); !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v", err)
	}
	if err := Verify(context.Background(), Dir{Path: dir}); err != nil {
		t.Fatal(err)
	}
}

func TestPublishedChecksumNeedsHTTPS(t *testing.T) {
	f := &Fetcher{}
	if _, err := f.PublishedSHA256(context.Background(), "http://127.0.0.1:1/x.sha256.txt", "x"); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("got %v", err)
	}
}

// package -> serve -> fetch (interrupted once) -> install -> verify, then
// a tampered tarball and an interrupted install leave the old bundle intact.
func TestRoundTrip(t *testing.T) {
	src, _ := makeBundle(t)
	out := filepath.Join(t.TempDir(), "banger-runtime.tar.gz")
	tsum, err := Package(context.Background(), Dir{Path: src}, out)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadSHA256File(out + ".sha256"); got != tsum {
		t.Fatalf(".sha256 says %s, Package returned %s", got, tsum)
	}
	// Reproducible: packaging again gives the same bytes.
	if again, _ := Package(context.Background(), Dir{Path: src}, out+"2"); again != tsum {
		t.Error("packaging is not reproducible")
	}
	tarball, _ := os.ReadFile(out)
	shaLine, _ := os.ReadFile(out + ".sha256")

	s := newServer(t)
	s.put("/b/banger-runtime.tar.gz", tarball)
	s.put("/b/banger-runtime.tar.gz.sha256", shaLine)
	s.cut["/b/banger-runtime.tar.gz"] = true
	f, _ := s.fetcher(t)
	if _, _, err := f.FetchBundle(context.Background(), s.URL+"/b/banger-runtime.tar.gz", ""); err == nil {
		t.Fatal("cut download succeeded")
	}
	p, want, err := f.FetchBundle(context.Background(), s.URL+"/b/banger-runtime.tar.gz", "")
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	target := filepath.Join(prefix, "lib", "banger")
	if err := Install(context.Background(), p, target, want); err != nil {
		t.Fatal(err)
	}
	if err := Verify(context.Background(), Dir{Path: target}); err != nil {
		t.Fatal(err)
	}
	// The installed tree resolves from PREFIX/bin.
	os.MkdirAll(filepath.Join(prefix, "bin"), 0o755)
	os.WriteFile(filepath.Join(prefix, "bin", "banger"), nil, 0o755)
	t.Setenv("BANGER_RUNTIME_DIR", "")
	if d := ResolveFrom("", filepath.Join(prefix, "bin", "banger")); d.Path != target {
		t.Fatalf("resolved %+v", d)
	}

	// A tarball whose contents do not match its lock: refused, old intact.
	bad := filepath.Join(t.TempDir(), "bad.tar.gz")
	var badBuf bytes.Buffer
	{
		lock, _ := os.ReadFile(filepath.Join(src, LockName))
		files := map[string][]byte{LockName: lock}
		l, _ := ReadLock(src)
		for _, c := range l.Components {
			for _, fl := range c.Files {
				b, _ := os.ReadFile(filepath.Join(src, fl.Path))
				files[fl.Path] = b
			}
		}
		files["kernel/vmlinux"] = []byte("evil kernel")
		badBuf.Write(tgz(t, files))
	}
	os.WriteFile(bad, badBuf.Bytes(), 0o644)
	err = Install(context.Background(), bad, target, sum(badBuf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "kernel/vmlinux") {
		t.Fatalf("tampered tarball: %v", err)
	}
	if err := Install(context.Background(), bad, target, ""); err == nil || !strings.Contains(err.Error(), "no checksum") {
		t.Fatalf("tarball without .sha256: %v", err)
	}
	if err := Install(context.Background(), p, target, sum([]byte("x"))); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong checksum: %v", err)
	}
	// An install cancelled before the swap leaves the old bundle.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Install(ctx, p, target, want); err == nil {
		t.Fatal("cancelled install succeeded")
	}
	if err := Verify(context.Background(), Dir{Path: target}); err != nil {
		t.Fatalf("old bundle damaged: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(target))
	if len(entries) != 1 {
		t.Errorf("leftovers beside the bundle: %v", entries)
	}
	// Reinstalling over an existing bundle swaps it.
	if err := Install(context.Background(), p, target, want); err != nil {
		t.Fatal(err)
	}
	if err := Verify(context.Background(), Dir{Path: target}); err != nil {
		t.Fatal(err)
	}
}

func TestPackageRefusesTampered(t *testing.T) {
	src, _ := makeBundle(t)
	os.WriteFile(filepath.Join(src, "kernel/release"), []byte("x"), 0o644)
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, err := Package(context.Background(), Dir{Path: src}, out); err == nil || !strings.Contains(err.Error(), "kernel/release") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("tarball written for a tampered bundle")
	}
}

// TestInstallUsesWhatItVerified replaces the tarball at its path right
// after Install hashed it: what gets installed must still be the verified
// tarball, read through the descriptor that was hashed, although the
// replacement is a bundle that verifies against its own lock.
func TestInstallUsesWhatItVerified(t *testing.T) {
	srcA, m := makeBundle(t)
	tarA := filepath.Join(t.TempDir(), "a.tar.gz")
	sumA, err := Package(context.Background(), Dir{Path: srcA}, tarA)
	if err != nil {
		t.Fatal(err)
	}
	srcB, _ := makeBundle(t)
	os.WriteFile(filepath.Join(srcB, "kernel", "vmlinux"), []byte("another kernel"), 0o644)
	if _, err := GenerateLock(srcB, m, LockOptions{DebCacheDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	tarB := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, err := Package(context.Background(), Dir{Path: srcB}, tarB); err != nil {
		t.Fatal(err)
	}
	swapped := false
	testHookAfterHash = func(p string) {
		if p == tarA && !swapped {
			swapped = true
			if err := os.Rename(tarB, tarA); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { testHookAfterHash = nil })
	target := filepath.Join(t.TempDir(), "banger")
	if err := Install(context.Background(), tarA, target, sumA); err != nil {
		t.Fatal(err)
	}
	if !swapped {
		t.Fatal("the hook never ran")
	}
	got, _ := os.ReadFile(filepath.Join(target, "kernel", "vmlinux"))
	want, _ := os.ReadFile(filepath.Join(srcA, "kernel", "vmlinux"))
	if !bytes.Equal(got, want) {
		t.Fatalf("installed the tarball put at the path after verification (kernel %q)", got)
	}
}

// TestDownloadRenamesWhatItVerified replaces the finished .part file after
// it was hashed: the swapped-in file must not end up in the cache.
func TestDownloadRenamesWhatItVerified(t *testing.T) {
	body := []byte("the real archive")
	s := newServer(t)
	s.put("/a.tgz", body)
	f, _ := s.fetcher(t)
	url := s.URL + "/a.tgz"
	part := f.CachePath(url) + ".part"
	testHookAfterHash = func(p string) {
		if p == part {
			os.Remove(p)
			os.WriteFile(p, []byte("evil"), 0o644)
		}
	}
	t.Cleanup(func() { testHookAfterHash = nil })
	_, err := f.Download(context.Background(), url, sum(body))
	if err == nil || !strings.Contains(err.Error(), "replaced while it was verified") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(f.CachePath(url)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the swapped file is in the cache: %v", err)
	}
}

// TestInstallRefusesUnsafeFolder: as root, a bundle is not installed where
// another user could swap it after it was verified.
func TestInstallRefusesUnsafeFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		testhost.Skip(t, "the folder check applies to root only")
	}
	src, _ := makeBundle(t)
	tarball := filepath.Join(t.TempDir(), "b.tar.gz")
	want, err := Package(context.Background(), Dir{Path: src}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(t.TempDir(), "lib")
	os.Mkdir(parent, 0o755)
	if err := os.Chown(parent, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	err = Install(context.Background(), tarball, filepath.Join(parent, "banger"), want)
	if err == nil || !strings.Contains(err.Error(), parent+" is owned by uid 1000") || !strings.Contains(err.Error(), "chown root "+parent) {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("left in %s: %v", parent, entries)
	}
}
