package bundle

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveFrom(t *testing.T) {
	mk := func(t *testing.T, dirs ...string) string {
		root := t.TempDir()
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, "bin", "banger"), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		return root
	}
	t.Run("source checkout", func(t *testing.T) {
		t.Setenv("BANGER_RUNTIME_DIR", "")
		root := mk(t, "bin", "runtime")
		d := ResolveFrom("", filepath.Join(root, "bin", "banger"))
		if d.Path != filepath.Join(root, "runtime") || d.How != "source checkout (./runtime)" {
			t.Fatalf("got %+v", d)
		}
		if len(d.Searched) != 2 || d.Searched[0] != filepath.Join(root, "lib", "banger") {
			t.Fatalf("searched %v", d.Searched)
		}
	})
	t.Run("installed tree", func(t *testing.T) {
		t.Setenv("BANGER_RUNTIME_DIR", "")
		root := mk(t, "bin", "lib/banger")
		d := ResolveFrom("", filepath.Join(root, "bin", "banger"))
		if d.Path != filepath.Join(root, "lib", "banger") || d.How != "installed tree (../lib/banger beside the binary)" {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("installed tree through a symlink", func(t *testing.T) {
		t.Setenv("BANGER_RUNTIME_DIR", "")
		root := mk(t, "bin", "lib/banger")
		link := filepath.Join(t.TempDir(), "banger")
		if err := os.Symlink(filepath.Join(root, "bin", "banger"), link); err != nil {
			t.Fatal(err)
		}
		if d := ResolveFrom("", link); d.Path != filepath.Join(root, "lib", "banger") {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("config overrides", func(t *testing.T) {
		t.Setenv("BANGER_RUNTIME_DIR", "")
		root := mk(t, "bin", "lib/banger")
		cfg := t.TempDir()
		if d := ResolveFrom(cfg, filepath.Join(root, "bin", "banger")); d.Path != cfg || d.How != "config key runtime.dir" {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("env overrides config", func(t *testing.T) {
		root := mk(t, "bin", "lib/banger")
		env := t.TempDir()
		t.Setenv("BANGER_RUNTIME_DIR", env)
		if d := ResolveFrom(t.TempDir(), filepath.Join(root, "bin", "banger")); d.Path != env || d.How != "$BANGER_RUNTIME_DIR" {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("missing override is not skipped", func(t *testing.T) {
		root := mk(t, "bin", "lib/banger")
		env := filepath.Join(t.TempDir(), "nope")
		t.Setenv("BANGER_RUNTIME_DIR", env)
		if d := ResolveFrom("", filepath.Join(root, "bin", "banger")); d.Path != env {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("nothing found", func(t *testing.T) {
		t.Setenv("BANGER_RUNTIME_DIR", "")
		root := mk(t, "bin")
		d := ResolveFrom("", filepath.Join(root, "bin", "banger"))
		if d.How != "not found" || len(d.Searched) != 2 {
			t.Fatalf("got %+v", d)
		}
	})
}
