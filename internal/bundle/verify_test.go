package bundle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeBundle writes a small bundle (kernel + agent) and its lock into a
// temporary directory and returns the directory and the manifest.
func makeBundle(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"kernel/vmlinux":    {strings.Repeat("kernel!", 1000), 0o644},
		"kernel/initrd.img": {"initrd", 0o644},
		"kernel/release":    {"6.1.0-56-cloud-amd64\n", 0o644},
		"kernel/modules/lib/modules/6.1.0-56-cloud-amd64/modules.dep":          {"", 0o644},
		"kernel/modules/lib/modules/6.1.0-56-cloud-amd64/kernel/virtio_net.ko": {"elf", 0o644},
		"agent/banger-vsock-pingd": {"#!/bin/sh\necho agent\n", 0o755},
	}
	for p, f := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	m, err := ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	m.Components["kernel"].Files = append(m.Components["kernel"].Files, ManifestFile{Path: "kernel/initrd.img"}, ManifestFile{Path: "kernel/release"})
	if _, err := GenerateLock(dir, m, LockOptions{DebCacheDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestVerifyGood(t *testing.T) {
	dir, _ := makeBundle(t)
	d := Dir{Path: dir, How: "test"}
	if err := Verify(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(context.Background(), d, InspectOptions{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, c := range r.Components {
		states[c.Name] = c.State
	}
	want := map[string]string{"firecracker": StateMissing, "kernel": StatePresent, "agent": StatePresent}
	for k, v := range want {
		if states[k] != v {
			t.Errorf("%s: state %s, want %s", k, states[k], v)
		}
	}
	l, err := ReadLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.Components["kernel"].Files); n != 5 {
		t.Errorf("kernel locks %d files, want 5", n)
	}
}

func TestVerifyTamper(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   []string
		is     error
	}{
		{"flipped byte", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "kernel/vmlinux")
			st, _ := os.Stat(p)
			b, _ := os.ReadFile(p)
			b[100] ^= 1
			writeKeepMode(t, p, b)
			// Setting mtime back does not hide the change: ctime moves.
			os.Chtimes(p, st.ModTime(), st.ModTime())
		}, []string{"component kernel", "kernel/vmlinux", "content changed", "expected SHA-256 ", "actual ", "`make runtime`"}, ErrMismatch},
		{"truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "agent/banger-vsock-pingd"), 3); err != nil {
				t.Fatal(err)
			}
		}, []string{"component agent", "agent/banger-vsock-pingd", "truncated (3 bytes", "`make agent`"}, ErrMismatch},
		{"missing file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "kernel/modules/lib/modules/6.1.0-56-cloud-amd64/kernel/virtio_net.ko"))
		}, []string{"component kernel", "virtio_net.ko: missing", "actual (none)"}, ErrMissing},
		{"extra executable at top", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "evil"), []byte("#!/bin/sh\n"), 0o755)
		}, []string{"evil: unexpected executable", "rm " + "DIR/evil"}, ErrMismatch},
		{"extra executable in component dir", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "agent/helper"), []byte("x"), 0o755)
		}, []string{"component agent", "agent/helper: unexpected executable"}, ErrMismatch},
		{"firecracker dropped in by hand", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "firecracker"), 0o755)
			os.WriteFile(filepath.Join(dir, "firecracker/firecracker"), []byte("x"), 0o755)
		}, []string{"firecracker/firecracker: unexpected executable", "component firecracker, which this bundle does not hold"}, ErrMismatch},
		{"mode changed", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "agent/banger-vsock-pingd"), 0o644)
		}, []string{"component agent", "mode 0644, expected 0755"}, ErrMismatch},
		{"no lock", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, LockName))
		}, []string{"has no readable " + LockName, "make runtime"}, ErrMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := makeBundle(t)
			d := Dir{Path: dir, How: "test", Searched: []string{dir, "/elsewhere"}}
			// Warm the stamp cache first: tampering must still be seen.
			if err := Verify(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			tc.tamper(t, dir)
			err := Verify(context.Background(), d)
			if err == nil {
				t.Fatal("tampered bundle verified")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error is not %v: %v", tc.is, err)
			}
			msg := err.Error()
			for _, w := range append(tc.want, dir, "found via test", "/elsewhere") {
				w = strings.ReplaceAll(w, "DIR", dir)
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
		})
	}
}

func writeKeepMode(t *testing.T, p string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestGenerateLockMissingRequired(t *testing.T) {
	dir, m := makeBundle(t)
	os.Remove(filepath.Join(dir, "kernel/vmlinux"))
	_, err := GenerateLock(dir, m, LockOptions{DebCacheDir: t.TempDir()})
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), `component "kernel"`) || !strings.Contains(err.Error(), "kernel/vmlinux") {
		t.Fatalf("got %v", err)
	}
}

// GenerateLock with Only rewrites one component and keeps the others.
func TestGenerateLockOnly(t *testing.T) {
	dir, m := makeBundle(t)
	if err := os.WriteFile(filepath.Join(dir, "agent/banger-vsock-pingd"), []byte("new agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateLock(dir, m, LockOptions{Only: []string{"agent"}}); err != nil {
		t.Fatal(err)
	}
	if err := Verify(context.Background(), Dir{Path: dir}); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "kernel"), 0o755)
	big := make([]byte, 50<<20)
	os.WriteFile(filepath.Join(dir, "kernel/vmlinux"), big, 0o644)
	l := &Lock{Schema: 1, Components: map[string]*LockComponent{}}
	lf, _ := hashFile(dir, "kernel/vmlinux")
	l.Components["kernel"] = &LockComponent{Kind: KindRecipe, Files: []LockFile{lf}}
	WriteLock(dir, l)
	for b.Loop() {
		Inspect(context.Background(), Dir{Path: dir}, InspectOptions{})
	}
}

// TestVerifyVMStart: a VM start's verification sees a changed kernel, a
// changed agent and a changed lock (its parse is cached by stamp), but
// not the module tree or files the lock does not name, which a start
// never reads.
func TestVerifyVMStart(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   string // "" when the start verifies
	}{
		{"untouched", func(*testing.T, string) {}, ""},
		{"kernel changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "kernel/vmlinux")
			b, _ := os.ReadFile(p)
			b[10] ^= 1
			writeKeepMode(t, p, b)
		}, "kernel/vmlinux: content changed"},
		{"initrd gone", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "kernel/initrd.img"))
		}, "kernel/initrd.img: missing"},
		{"agent changed", func(t *testing.T, dir string) {
			writeKeepMode(t, filepath.Join(dir, "agent/banger-vsock-pingd"), []byte("#!/bin/sh\necho other\n"))
		}, "agent/banger-vsock-pingd: content changed"},
		{"lock changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, LockName)
			b, _ := os.ReadFile(p)
			l, _ := ReadLock(dir)
			var sum string
			for _, f := range l.Components["kernel"].Files {
				if f.Path == "kernel/vmlinux" {
					sum = f.SHA256
				}
			}
			writeKeepMode(t, p, []byte(strings.Replace(string(b), sum, strings.Repeat("0", 64), 1)))
		}, "kernel/vmlinux: content changed"},
		{"module gone", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "kernel/modules/lib/modules/6.1.0-56-cloud-amd64/kernel/virtio_net.ko"))
		}, ""},
		{"extra executable", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "evil"), []byte("#!/bin/sh\n"), 0o755)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := makeBundle(t)
			d := Dir{Path: dir, How: "test"}
			// Warm both caches first: changes must still be seen.
			if err := VerifyVMStart(ctx, d); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			tc.tamper(t, dir)
			err := VerifyVMStart(ctx, d)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("VerifyVMStart: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("VerifyVMStart: %v, want an error with %q", err, tc.want)
			}
			if tc.want == "" && tc.name != "untouched" && Verify(ctx, d) == nil {
				t.Errorf("Verify passes a bundle with %s", tc.name)
			}
		})
	}
}
