package tui

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/store"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// bangerdBin is built once per test binary run.
var bangerdBin string

func TestMain(m *testing.M) {
	flag.Parse()
	// Goldens are plain text: no colours or attributes.
	lipgloss.SetColorProfile(termenv.Ascii)
	dir, err := os.MkdirTemp("", "btui-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bangerdBin = filepath.Join(dir, "bangerd")
	out, err := exec.Command("go", "build", "-o", bangerdBin, "../../cmd/bangerd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build bangerd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rootMask replaces the random part of a test root in screens, so goldens
// do not depend on it; it has the same length, so layouts are identical.
const rootMask = "/tmp/btui-TESTROOT"

// testDaemon is a real bangerd on private XDG dirs, run in its own network
// namespace when possible so that nothing it does reaches the host network.
type testDaemon struct {
	t      *testing.T
	root   string
	env    []string
	cmd    *exec.Cmd
	log    *os.File
	client *client.Client
}

// newTestDaemon makes the dirs and the database; seed fills it before the
// daemon starts.
func newTestDaemon(t *testing.T, seed func(ctx context.Context, s *store.Store, root string) error) *testDaemon {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	root := "/tmp/btui-" + hex.EncodeToString(b) // len(rootMask)
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	d := &testDaemon{t: t, root: root}
	d.env = append(os.Environ(),
		"XDG_CONFIG_HOME="+root+"/c", "XDG_STATE_HOME="+root+"/s", "XDG_DATA_HOME="+root+"/d",
		"XDG_CACHE_HOME="+root+"/k", "XDG_RUNTIME_DIR="+root+"/r",
		"BANGER_ACCEL=tcg", "BANGER_RUNTIME_DIR="+repoRuntime(t))
	t.Cleanup(func() {
		d.stop()
		os.RemoveAll(root)
	})
	if err := os.MkdirAll(root+"/s/banger", 0o700); err != nil {
		t.Fatal(err)
	}
	if seed != nil {
		ctx := context.Background()
		s, err := store.Open(ctx, root+"/s/banger/banger.db")
		if err != nil {
			t.Fatal(err)
		}
		if err := seed(ctx, s, root); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	d.client = client.New(root + "/r/banger/bangerd.sock")
	d.start()
	return d
}

func (d *testDaemon) start() {
	t := d.t
	t.Helper()
	argv := []string{bangerdBin}
	if os.Getuid() == 0 {
		if p, err := exec.LookPath("unshare"); err == nil {
			argv = []string{p, "--net", bangerdBin}
		}
	}
	log, err := os.OpenFile(d.root+"/bangerd.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	d.log = log
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = d.env
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start bangerd: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := d.client.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(d.root + "/bangerd.log")
			t.Fatalf("bangerd did not answer: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon (SIGTERM) and waits for it.
func (d *testDaemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.log.Close()
	d.cmd = nil
}

// seedBasic inserts two images and four stopped VMs, one of which has a
// kernel that does not exist and a recorded last error.
func seedBasic(ctx context.Context, s *store.Store, root string) error {
	imgPath := root + "/d/rootfs.ext4"
	if err := os.MkdirAll(filepath.Dir(imgPath), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(imgPath, []byte("not really ext4"), 0o600); err != nil {
		return err
	}
	fixed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, im := range []store.Image{
		{ID: "img-default", Name: "default", Source: "debian:bookworm", Path: imgPath, SizeBytes: 2 << 30, KernelRelease: "6.1.0", CreatedAt: fixed},
		{ID: "img-alpine", Name: "alpine", Source: "oci:alpine:3.20", Path: imgPath, SizeBytes: 512 << 20, KernelRelease: "6.1.0", CreatedAt: fixed},
	} {
		if err := store.InsertImage(ctx, s.DB, &im); err != nil {
			return err
		}
	}
	vms := []store.VM{
		{ID: "vm0000001", Name: "alpha", ImageID: "img-default", CPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30, VsockCID: 3},
		{ID: "vm0000002", Name: "bravo", ImageID: "img-alpine", CPUs: 1, MemoryMiB: 256, DiskBytes: 2 << 30},
		{ID: "vm0000003", Name: "charlie", ImageID: "img-default", CPUs: 4, MemoryMiB: 2048, DiskBytes: 8 << 30,
			LastError: "start vm \"charlie\": kernel /nonexistent/vmlinux: no such file"},
		{ID: "vm0000004", Name: "a-very-long-vm-name-that-is-cut", ImageID: "img-default", CPUs: 1, MemoryMiB: 512, DiskBytes: 4 << 30},
	}
	return s.Tx(ctx, func(tx *sql.Tx) error {
		for i, vm := range vms {
			vm.Kernel, vm.KernelArgs, vm.VMM = "/nonexistent/vmlinux", "console=ttyS0", "qemu"
			vm.MAC = fmt.Sprintf("52:54:00:00:00:%02x", i+1)
			vm.DesiredState = store.DesiredStopped
			vm.CreatedAt = fixed
			if err := store.InsertVM(ctx, tx, &vm); err != nil {
				return err
			}
			if err := store.InsertLease(ctx, tx, fmt.Sprintf("10.99.0.%d", i+2), vm.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// seedMany inserts one image and n stopped VMs.
func seedMany(n int) func(ctx context.Context, s *store.Store, root string) error {
	return func(ctx context.Context, s *store.Store, root string) error {
		im := store.Image{ID: "img-default", Name: "default", Source: "bench", Path: root + "/none.ext4", SizeBytes: 1 << 30}
		if err := store.InsertImage(ctx, s.DB, &im); err != nil {
			return err
		}
		return s.Tx(ctx, func(tx *sql.Tx) error {
			for i := 0; i < n; i++ {
				vm := store.VM{ID: fmt.Sprintf("many%05d", i), Name: fmt.Sprintf("vm-%02d", i), ImageID: im.ID,
					CPUs: 1, MemoryMiB: 256, DiskBytes: 4 << 30, Kernel: "/nonexistent/vmlinux", KernelArgs: "console=ttyS0",
					MAC: fmt.Sprintf("52:54:00:01:%02x:%02x", i>>8, i&0xff), VMM: "qemu", DesiredState: store.DesiredStopped}
				if err := store.InsertVM(ctx, tx, &vm); err != nil {
					return err
				}
				if err := store.InsertLease(ctx, tx, fmt.Sprintf("10.98.%d.%d", i>>8, i&0xff+2), vm.ID); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// screen is the model's view as plain text with the test root masked.
func (d *testDaemon) screen(m *Model) string {
	// The random part alone: a wrapped line may split the path, and a cut
	// one ("…") may end inside it.
	random := strings.TrimPrefix(d.root, "/tmp/btui-")
	out := strings.ReplaceAll(stripANSI(m.View()), random, "TESTROOT")
	for k := len(random) - 1; k > 0; k-- {
		out = strings.ReplaceAll(out, "/tmp/btui-"+random[:k]+"…", "/tmp/btui-"+"TESTROOT"[:k]+"…")
	}
	return out
}

// repoRuntime is the checkout's ./runtime (it need not exist: the tests
// boot nothing).
func repoRuntime(t *testing.T) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "runtime"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
