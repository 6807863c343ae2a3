package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// entries lists dir, so a test can see that no temporary file is left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, c := range []struct {
		data string
		perm os.FileMode
	}{{"first", 0o644}, {"second, longer", 0o600}} {
		if err := WriteFile(p, []byte(c.data), c.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != c.data {
			t.Fatalf("content = %q, %v; want %q", b, err, c.data)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != c.perm {
			t.Errorf("mode = %v, want %v (exactly, whatever the umask)", st.Mode().Perm(), c.perm)
		}
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only state.json", got)
	}
}

func TestWriteFileReplacesSymlinkWithoutFollowing(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "link")
	if err := os.Symlink(victim, p); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("symlink target was written: %q", b)
	}
	if st, _ := os.Lstat(p); st.Mode().Type() != 0 {
		t.Errorf("%s is still a symlink", p)
	}
}

func TestFailedCommitLeavesTargetAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory at the target: the rename fails.
	p := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(p, []byte("data"), 0o600)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want an error naming %s", err, p)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "target" {
		t.Errorf("directory holds %v, want only target", got)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestAbortKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("half"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("before Commit the target reads %q, want old", b)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("after Abort the target reads %q, want old", b)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v after Abort, want only f", got)
	}
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

func TestAbortAfterCommitIsNoop(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := Create(p, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("data")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "data" {
		t.Errorf("target reads %q after Commit+Abort, want data", b)
	}
}
