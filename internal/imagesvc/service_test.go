package imagesvc

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
)

func TestMain(m *testing.M) {
	sandbox.Main() // the build sandbox's stages run in this binary
	os.Exit(m.Run())
}

// newTestService returns a service over a real store in a temp folder
// (no runtime bundle, no network).
func newTestService(t *testing.T) *Service {
	t.Helper()
	root := t.TempDir()
	dirs := paths.Dirs{Config: filepath.Join(root, "config"), State: filepath.Join(root, "state"),
		Data: filepath.Join(root, "data"), Cache: filepath.Join(root, "cache"), Runtime: filepath.Join(root, "run")}
	for _, p := range []string{dirs.State, dirs.ImagesDir()} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(context.Background(), dirs.Database())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Config{Dirs: dirs, Owner: "bgr-test-" + filepath.Base(root)}, st, slog.New(slog.DiscardHandler))
}

// imagesLeft returns the folders under the images directory and the rows
// of the images table, tombstones included.
func imagesLeft(t *testing.T, s *Service) (folders []string, rows int) {
	t.Helper()
	entries, err := os.ReadDir(s.cfg.Dirs.ImagesDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		folders = append(folders, e.Name())
	}
	if err := s.store.DB.QueryRow("SELECT COUNT(*) FROM images").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return folders, rows
}

func TestDetectImportKind(t *testing.T) {
	ext4 := make([]byte, 4096)
	ext4[1080], ext4[1081] = 0x53, 0xEF
	tarball := make([]byte, 1024)
	copy(tarball[257:], "ustar\x0000")
	gnuTar := make([]byte, 1024)
	copy(gnuTar[257:], "ustar  \x00")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"ext4", ext4, importExt4},
		{"posix tar", tarball, importTar},
		{"gnu tar", gnuTar, importTar},
		{"gzip", []byte{0x1f, 0x8b, 8, 0, 0, 0}, importTarGzip},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), importTarXz},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x24}, importTarZstd},
		{"text", []byte("hello, world\n"), ""},
		{"empty", nil, ""},
	} {
		if got := detectImportKind(bytes.NewReader(tc.data)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSweepRemovesOnlyOrphanImageFolders(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t)
	root := s.cfg.Dirs.ImagesDir()
	live := store.Image{ID: "0123456789ab", Name: "live", Source: "debian:bookworm",
		Path: filepath.Join(root, "0123456789ab", "rootfs.ext4"), SizeBytes: 1}
	if err := store.InsertImage(ctx, s.store.DB, &live); err != nil {
		t.Fatal(err)
	}
	// A tombstone no VM names (the daemon died before deleting it).
	dead := store.Image{ID: "ba9876543210", Name: "dead", Source: "debian:bookworm",
		Path: filepath.Join(root, "ba9876543210", "rootfs.ext4"), SizeBytes: 1}
	store.InsertImage(ctx, s.store.DB, &dead)
	store.MarkImageRemoved(ctx, s.store.DB, dead.ID)
	for _, f := range []string{"0123456789ab", "ba9876543210", "deadbeef0000", "not-an-image"} {
		os.MkdirAll(filepath.Join(root, f), 0o700)
		os.WriteFile(filepath.Join(root, f, "rootfs.ext4"), []byte("x"), 0o600)
	}
	if err := s.sweepImageFolders(ctx); err != nil {
		t.Fatal(err)
	}
	folders, rows := imagesLeft(t, s)
	if strings.Join(folders, ",") != "0123456789ab,not-an-image" || rows != 1 {
		t.Fatalf("after the sweep: folders %v, %d rows; want the live image's folder and the unknown one, 1 row", folders, rows)
	}
}

func init() {
	// A build that never ends, writing into its folder (test.sweep).
	sandbox.RegisterJob("imagesvc.test.block", func(sb *sandbox.Sandbox, _ json.RawMessage) (any, error) {
		if err := os.WriteFile("/work/partial", []byte("x"), 0o644); err != nil {
			return nil, err
		}
		sb.Event("started")
		time.Sleep(time.Hour)
		return nil, nil
	})
}

// TestSweepKillsEarlierBuildsFirst: a build of an earlier daemon (same
// state folder) still runs, writing into its image folder: the sweep ends
// it before it removes the folder (with the sandbox's files in it).
func TestSweepKillsEarlierBuildsFirst(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t)
	ids, err := s.sandboxIDs()
	if err != nil {
		testhost.Skip(t, "image builds need subordinate ids: %v", err)
	}
	folder := filepath.Join(s.cfg.Dirs.ImagesDir(), "0123456789ab")
	work := filepath.Join(folder, "banger-rootfs-1")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.SetOwner(s.cfg.Owner); err != nil {
		t.Fatal(err)
	}
	started := make(chan bool)
	done := make(chan error, 1)
	go func() {
		_, err := sandbox.Run(ctx, sandbox.Spec{IDs: ids, Job: "imagesvc.test.block",
			Binds:   []sandbox.Bind{{Source: work, At: "/work", Writable: true, Give: true}},
			OnEvent: func(json.RawMessage) { close(started) }})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the earlier build ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the earlier build did not start")
	}
	s.Sweep(ctx)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the earlier daemon's build still runs after the sweep")
	}
	if _, err := os.Stat(folder); !os.IsNotExist(err) {
		t.Errorf("the earlier build's folder is still there: %v", err)
	}
}
