package buildcache

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/testhost"
)

func base() Inputs {
	return Inputs{Source: "sha256:aaa", Script: "sha256:bbb", Kernel: "6.1.0-56-cloud-amd64 sha256:ccc",
		Agent: "sha256:ddd", SSHPubKey: "ssh-ed25519 AAAA", Options: map[string]string{"platform": "linux/amd64"}}
}

func TestKeyDependsOnEveryInput(t *testing.T) {
	k := base().Key()
	if len(k) != 64 {
		t.Fatalf("key %q is not 64 hex digits", k)
	}
	if base().Key() != k {
		t.Fatal("the key of equal inputs differs")
	}
	// Map order must not matter.
	a, b := base(), base()
	a.Options = map[string]string{"x": "1", "y": "2", "z": "3"}
	b.Options = map[string]string{"z": "3", "y": "2", "x": "1"}
	if a.Key() != b.Key() {
		t.Error("option order changed the key")
	}
	changes := map[string]func(*Inputs){
		"source":  func(in *Inputs) { in.Source = "sha256:aab" },
		"script":  func(in *Inputs) { in.Script = "sha256:bbc" },
		"kernel":  func(in *Inputs) { in.Kernel = "6.1.0-57-cloud-amd64 sha256:ccc" },
		"agent":   func(in *Inputs) { in.Agent = "sha256:dde" },
		"ssh key": func(in *Inputs) { in.SSHPubKey = "ssh-ed25519 BBBB" },
		"option":  func(in *Inputs) { in.Options["platform"] = "linux/arm64" },
		"new opt": func(in *Inputs) { in.Options["packages"] = "vim" },
	}
	seen := map[string]string{k: "base"}
	for name, change := range changes {
		in := base()
		change(&in)
		got := in.Key()
		if prev, dup := seen[got]; dup {
			t.Errorf("changing the %s gives the key of %s", name, prev)
		}
		seen[got] = name
	}
}

func writeSparse(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt([]byte("start"), 0)
	f.WriteAt([]byte("middle"), 64<<20)
	f.Truncate(128 << 20)
}

func TestPutGetSharesTheInode(t *testing.T) {
	dir := t.TempDir()
	c := Cache{Dir: filepath.Join(dir, "cache")}
	key := base().Key()
	dst := filepath.Join(dir, "img1.ext4")
	if _, ok, err := c.Get(key, dst); ok || err != nil {
		t.Fatalf("empty cache: ok=%v err=%v", ok, err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatal("a miss created the destination")
	}
	src := filepath.Join(dir, "built.ext4")
	writeSparse(t, src)
	if err := c.Put(src, Meta{Key: key, Source: "oci:x", KernelRelease: "6.1", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := c.Get(key, dst)
	if !ok || err != nil || m.Source != "oci:x" {
		t.Fatalf("hit: %+v ok=%v err=%v", m, ok, err)
	}
	var a, b syscall.Stat_t
	syscall.Stat(src, &a)
	syscall.Stat(dst, &b)
	if a.Ino != b.Ino {
		t.Error("on one file system the cached image should be a hard link")
	}
	// Replacing an entry keeps the images made from the old one intact.
	src2 := filepath.Join(dir, "built2.ext4")
	os.WriteFile(src2, []byte("v2"), 0o644)
	if err := c.Put(src2, Meta{Key: key, Source: "oci:y"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b[:5]) != "start" {
		t.Error("replacing the entry changed an image made from it")
	}
	dst2 := filepath.Join(dir, "img2.ext4")
	if m, ok, _ := c.Get(key, dst2); !ok || m.Source != "oci:y" {
		t.Errorf("after replace: %+v %v", m, ok)
	}
	// A damaged entry is a miss.
	os.WriteFile(filepath.Join(c.Dir, key, metaName), []byte("{"), 0o600)
	if _, ok, err := c.Get(key, filepath.Join(dir, "img3.ext4")); ok || err != nil {
		t.Errorf("damaged entry: ok=%v err=%v", ok, err)
	}
}

func TestPruneKeepsLinkedAndRecent(t *testing.T) {
	dir := t.TempDir()
	c := Cache{Dir: dir + "/cache"}
	var keys []string
	for i := range 4 {
		in := base()
		in.Source = string(rune('a' + i))
		k := in.Key()
		keys = append(keys, k)
		src := filepath.Join(dir, k)
		os.WriteFile(src, []byte(k), 0o644)
		if err := c.Put(src, Meta{Key: k}); err != nil {
			t.Fatal(err)
		}
		// Oldest first.
		old := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(filepath.Join(c.Dir, k, metaName), old, old)
		if i != 0 {
			os.Remove(src) // image removed: the entry is an orphan
		}
	}
	n, err := c.Prune(1)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
	for i, k := range keys {
		_, err := os.Stat(filepath.Join(c.Dir, k))
		want := i == 0 || i == 3 // 0 still linked by an image; 3 the newest orphan
		if (err == nil) != want {
			t.Errorf("entry %d kept=%v, want %v", i, err == nil, want)
		}
	}
}

// TestPruneRemovesUnfinishedPuts: what a Put left when its daemon was
// killed (its temporary folder, the entry it was replacing) goes once
// stale; a Put that may still run is left alone, and so is the entry.
func TestPruneRemovesUnfinishedPuts(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	k := base().Key()
	src := filepath.Join(t.TempDir(), "image")
	os.WriteFile(src, []byte("image"), 0o644)
	if err := c.Put(src, Meta{Key: k}); err != nil {
		t.Fatal(err)
	}
	stale, running, old := filepath.Join(c.Dir, ".put-1"), filepath.Join(c.Dir, ".put-2"), filepath.Join(c.Dir, k+".old")
	for _, d := range []string{stale, running, old} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, imageName), []byte("half"), 0o600)
	}
	then := time.Now().Add(-2 * staleAfter)
	for _, d := range []string{stale, old} {
		os.Chtimes(d, then, then)
	}
	n, err := c.Prune(10)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want the 2 stale leftovers", n, err)
	}
	for _, tc := range []struct {
		path string
		kept bool
	}{{stale, false}, {old, false}, {running, true}, {c.entry(k), true}} {
		if _, err := os.Stat(tc.path); (err == nil) != tc.kept {
			t.Errorf("%s: kept=%v, want %v", filepath.Base(tc.path), err == nil, tc.kept)
		}
	}
}

func TestPutAcrossFileSystemsCopies(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "buildcache-")
	if err != nil {
		testhost.Skip(t, "no /dev/shm to put a second file system beside the cache: %v", err)
	}
	defer os.RemoveAll(shm)
	dir := t.TempDir()
	var a, b syscall.Stat_t
	syscall.Stat(shm, &a)
	syscall.Stat(dir, &b)
	if a.Dev == b.Dev {
		t.Skip("/dev/shm and the test's temporary folder are one file system here")
	}
	src := filepath.Join(shm, "built.ext4")
	writeSparse(t, src)
	c := Cache{Dir: filepath.Join(dir, "cache")}
	key := base().Key()
	if err := c.Put(src, Meta{Key: key}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(shm, "again.ext4")
	if _, ok, err := c.Get(key, dst); !ok || err != nil {
		t.Fatalf("get across file systems: ok=%v err=%v", ok, err)
	}
	f, _ := os.Open(dst)
	defer f.Close()
	buf := make([]byte, 6)
	f.ReadAt(buf, 64<<20)
	var st syscall.Stat_t
	syscall.Stat(dst, &st)
	if string(buf) != "middle" || st.Size != 128<<20 || st.Blocks*512 > 8<<20 {
		t.Errorf("copy: %q, size %d, %d bytes allocated", buf, st.Size, st.Blocks*512)
	}
}
