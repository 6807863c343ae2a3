package strictmodes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

// tree makes dir/bundle with a file, a subfolder and a binary in it, all
// safe (0755 folders, 0644 and 0755 files), and returns the bundle folder.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(root, "bundle")
	for _, d := range []string{b, filepath.Join(b, "kernel"), filepath.Join(b, "firecracker")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, mode := range map[string]os.FileMode{
		"bundle.lock.toml":        0o644,
		"kernel/vmlinux":          0o644,
		"firecracker/firecracker": 0o755,
	} {
		if err := os.WriteFile(filepath.Join(b, p), []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testhost.Skip(t, "needs root to give files to another user")
	}
}

// wantProblem checks that err is an *Error naming path with why, and that
// its message carries fix.
func wantProblem(t *testing.T, err error, path, why, fix string) {
	t.Helper()
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	found := false
	for _, p := range se.Problems {
		if p.Path == path && strings.Contains(p.Why, why) {
			found = true
		}
	}
	if !found {
		t.Errorf("problems %v lack %s being %q", se.Problems, path, why)
	}
	for _, s := range []string{path, why, "fix: ", fix, "StrictModes", se.What} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message lacks %q: %v", s, err)
		}
	}
}

func TestCheckTree(t *testing.T) {
	me := os.Getuid()
	t.Run("safe", func(t *testing.T) {
		b := tree(t)
		if err := CheckTree("runtime bundle", b, me); err != nil {
			t.Fatal(err)
		}
		if err := Check("firecracker", filepath.Join(b, "firecracker", "firecracker"), me); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name, rel string
		mode      os.FileMode
		why       string
	}{
		{"group-writable lock", "bundle.lock.toml", 0o664, "group-writable (mode 0664)"},
		{"world-writable binary", "firecracker/firecracker", 0o757, "world-writable (mode 0757)"},
		{"writable folder", "kernel", 0o777, "group- and world-writable (mode 0777)"},
		{"sticky folder inside", "kernel", 0o777 | os.ModeSticky, "group- and world-writable"},
		{"writable bundle folder", "", 0o775, "group-writable (mode 0775)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tree(t)
			p := filepath.Join(b, tc.rel)
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := CheckTree("runtime bundle", b, me)
			wantProblem(t, err, filepath.Clean(p), tc.why, "chmod -R go-w "+b)
		})
	}
	t.Run("lock of another user", func(t *testing.T) {
		needRoot(t)
		b := tree(t)
		p := filepath.Join(b, "bundle.lock.toml")
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, CheckTree("runtime bundle", b, 0), p, "owned by uid 1000, not root", "chown -R root "+b)
	})
	t.Run("parent of another user", func(t *testing.T) {
		needRoot(t)
		b := tree(t)
		parent := filepath.Dir(b)
		if err := os.Chown(parent, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, CheckTree("runtime bundle", b, 0), parent, "owned by uid 1000", "chown root "+parent)
		wantProblem(t, Check("firecracker", filepath.Join(b, "firecracker", "firecracker"), 0), parent, "owned by uid 1000", "chown root "+parent)
	})
	t.Run("group-writable parent", func(t *testing.T) {
		b := tree(t)
		parent := filepath.Dir(b)
		if err := os.Chmod(parent, 0o775); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, CheckTree("runtime bundle", b, me), parent, "group-writable (mode 0775)", "chmod go-w "+parent)
	})
	t.Run("sticky parent of the owner", func(t *testing.T) {
		b := tree(t)
		if err := os.Chmod(filepath.Dir(b), 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		if err := CheckTree("runtime bundle", b, me); err != nil {
			t.Fatalf("a sticky folder of the trusted owner above the bundle: %v", err)
		}
	})
	t.Run("sticky parent of another user", func(t *testing.T) {
		needRoot(t)
		b := tree(t)
		parent := filepath.Dir(b)
		os.Chmod(parent, 0o777|os.ModeSticky)
		if err := os.Chown(parent, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, CheckTree("runtime bundle", b, 0), parent, "owned by uid 1000", "chown root "+parent)
	})
	t.Run("through a symlink", func(t *testing.T) {
		// The path as written is safe; where it leads is not.
		b := tree(t)
		target := filepath.Dir(b)
		if err := os.Chmod(target, 0o777); err != nil {
			t.Fatal(err)
		}
		safe := t.TempDir()
		os.Chmod(safe, 0o755)
		link := filepath.Join(safe, "link")
		if err := os.Symlink(b, link); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, CheckTree("runtime bundle", link, me), target, "world-writable", "chmod go-w "+target)
	})
	t.Run("many problems", func(t *testing.T) {
		b := tree(t)
		for i := range 8 {
			p := filepath.Join(b, "kernel", "m"+string(rune('a'+i)))
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o666); err != nil {
				t.Fatal(err)
			}
		}
		err := CheckTree("runtime bundle", b, me)
		var se *Error
		if !errors.As(err, &se) || len(se.Problems) != 8 || !strings.Contains(err.Error(), "and 3 more") {
			t.Fatalf("err = %v", err)
		}
		if strings.Count(err.Error(), "chmod -R go-w") != 1 {
			t.Errorf("the fix is repeated: %v", err)
		}
	})
}
