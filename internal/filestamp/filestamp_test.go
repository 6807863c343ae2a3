package filestamp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStamp: a file's stamp stays while it is untouched and changes when
// it is replaced, rewritten with the same size, or has its times set back.
func TestStamp(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	stamp := func() Stamp {
		t.Helper()
		s, err := Path(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := stamp()
	if b := stamp(); b != a {
		t.Fatalf("an untouched file's stamp changed: %+v, then %+v", a, b)
	}
	changes := map[string]func() error{
		"rewritten with the same size": func() error { return os.WriteFile(p, []byte("two"), 0o644) },
		"modification time set back": func() error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Chtimes(p, time.Time{}, fi.ModTime())
		},
		"replaced by a rename": func() error {
			if err := os.WriteFile(p+".new", []byte("two"), 0o644); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		},
	}
	for name, change := range changes {
		before := stamp()
		time.Sleep(10 * time.Millisecond) // coarse file system clocks
		if err := change(); err != nil {
			t.Fatal(err)
		}
		if stamp() == before {
			t.Errorf("%s: the stamp did not change", name)
		}
	}
	if _, err := Path(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Path of a missing file: no error")
	}
}
