package guestcp

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/agent/agenttest"
)

// makeTree writes the acceptance tree: a symlink, an executable, an empty
// directory, a file name with spaces, a read-only folder, old times.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "empty"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "a file with spaces.txt"), []byte("hello\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Symlink("../a file with spaces.txt", filepath.Join(dir, "sub", "link")))
	must(os.Symlink("/nonexistent/target", filepath.Join(dir, "dangling")))
	must(os.MkdirAll(filepath.Join(dir, "ro"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "ro", "f"), bytes.Repeat([]byte{0, 1, 2, 255}, 100000), 0o444))
	must(os.Chmod(filepath.Join(dir, "ro"), 0o555))
	old := time.Date(2020, 1, 2, 3, 4, 5, 600000000, time.UTC)
	for _, p := range []string{"a file with spaces.txt", "sub/run.sh", "ro/f", "sub/empty", "sub", "ro"} {
		must(os.Chtimes(filepath.Join(dir, p), old, old))
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "ro"), 0o755) })
}

// treeOf describes a tree: per path its type, mode, size, content hash or
// link target, and mtime for files and directories.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += fmt.Sprintf(" %d %s %q", len(b), fi.ModTime().UTC(), b[:min(len(b), 16)])
		default:
			if rel != "." {
				desc += " " + fi.ModTime().UTC().String()
			}
		}
		out[rel] = desc
		return nil
	})
	return out
}

func TestSendExtractRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	makeTree(t, src)
	var buf bytes.Buffer
	sst, err := Send(&buf, src, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	parent, base, err := Target(dst, "tree", true)
	if err != nil || parent != dst || base != "tree" {
		t.Fatalf("target into a folder: %s %s %v", parent, base, err)
	}
	est, err := Extract(&buf, parent, base, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sst != est {
		t.Errorf("sent %+v, extracted %+v", sst, est)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "tree", "ro"), 0o755) })
	want, got := treeOf(t, src), treeOf(t, filepath.Join(dst, "tree"))
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d entries, want %d", len(got), len(want))
	}
	// Without -r a directory is refused; a single file goes to a new name.
	if _, err := Send(io.Discard, src, false, nil); !errors.Is(err, ErrIsDir) {
		t.Errorf("directory without recursive: %v", err)
	}
	buf.Reset()
	if _, err := Send(&buf, filepath.Join(src, "sub", "run.sh"), false, nil); err != nil {
		t.Fatal(err)
	}
	parent, base, err = Target(filepath.Join(dst, "renamed.sh"), "run.sh", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(&buf, parent, base, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "renamed.sh")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("single file: %v %v", fi, err)
	}
	// Targets that cannot be.
	if _, _, err := Target(filepath.Join(dst, "no", "such", "x"), "x", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing parent: %v", err)
	}
	if _, _, err := Target(filepath.Join(dst, "renamed.sh"), "tree", true); err == nil {
		t.Error("a directory over a file was accepted")
	}
}

// hostile builds a tar stream from entries.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func hostile(t *testing.T, entries ...entry) *bytes.Buffer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), ModTime: time.Now()}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return &buf
}

// TestExtractHostile: streams that try to write outside the destination
// fail or stay inside it; nothing appears outside.
func TestExtractHostile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		wantErr string
	}{
		{"dot-dot", []entry{{name: ".", typ: tar.TypeDir}, {name: "../escaped", typ: tar.TypeReg, body: "x"}}, "parent folder"},
		{"dot-dot inside", []entry{{name: ".", typ: tar.TypeDir}, {name: "a/../../escaped", typ: tar.TypeReg, body: "x"}}, "parent folder"},
		{"absolute", []entry{{name: ".", typ: tar.TypeDir}, {name: "/tmp/escaped", typ: tar.TypeReg, body: "x"}}, "absolute"},
		{"through an outside link", []entry{{name: ".", typ: tar.TypeDir}, {name: "l", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "l/escaped", typ: tar.TypeReg, body: "x"}}, "not a directory"},
		{"through a parent link", []entry{{name: ".", typ: tar.TypeDir}, {name: "up", typ: tar.TypeSymlink, link: ".."}, {name: "up/escaped", typ: tar.TypeReg, body: "x"}}, "not a directory"},
		{"through an inside link", []entry{{name: ".", typ: tar.TypeDir}, {name: "d", typ: tar.TypeDir}, {name: "l", typ: tar.TypeSymlink, link: "d"}, {name: "l/f", typ: tar.TypeReg, body: "x"}}, "not a directory"},
		{"a file over a link replaces the link", []entry{{name: ".", typ: tar.TypeDir}, {name: "l", typ: tar.TypeSymlink, link: "OUTSIDE/victim"}, {name: "l", typ: tar.TypeReg, body: "x"}}, ""},
		{"the top as a link, then a child", []entry{{name: ".", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "escaped", typ: tar.TypeReg, body: "x"}}, "not a directory"},
		{"a hard link", []entry{{name: ".", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "OUTSIDE/victim"}}, ""},
		{"a device", []entry{{name: ".", typ: tar.TypeDir}, {name: "dev", typ: tar.TypeChar}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "victim"), []byte("untouched"), 0o644)
			dest := filepath.Join(base, "dest")
			os.Mkdir(dest, 0o755)
			for i := range tc.entries {
				tc.entries[i].link = strings.ReplaceAll(tc.entries[i].link, "OUTSIDE", outside)
			}
			_, err := Extract(hostile(t, tc.entries...), dest, "top", ExtractOptions{})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("extract: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("extract: %v, want an error with %q", err, tc.wantErr)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "untouched" {
				t.Errorf("the victim outside was changed: %q", b)
			}
			for _, p := range []string{filepath.Join(base, "escaped"), filepath.Join(outside, "escaped"), filepath.Join(dest, "escaped"), "/tmp/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Errorf("outside holds %v", ents)
			}
		})
	}
	// The host side drops setuid; the guest side keeps it.
	dest := t.TempDir()
	if _, err := Extract(hostile(t, entry{name: ".", typ: tar.TypeReg, mode: 0o4755, body: "x"}), dest, "suid", ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dest, "suid")); fi.Mode()&fs.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("host side kept %v", fi.Mode())
	}
	if _, err := Extract(hostile(t, entry{name: ".", typ: tar.TypeReg, mode: 0o4755, body: "x"}), dest, "suid2", ExtractOptions{KeepSpecialBits: true}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dest, "suid2")); fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("guest side dropped setuid: %v", fi.Mode())
	}
	// A stream cut short is an error.
	full := hostile(t, entry{name: ".", typ: tar.TypeReg, body: strings.Repeat("x", 5000)}).Bytes()
	if _, err := Extract(bytes.NewReader(full[:1500]), dest, "cut", ExtractOptions{}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut stream: %v", err)
	}
}

// session serves HandleIn and HandleOut with a real agent server over a
// socketpair.
func session(t *testing.T) *agent.Session {
	return agenttest.Session(t, func(s *agent.Server) {
		s.Handle(OpIn, HandleIn)
		s.Handle(OpOut, HandleOut)
	})
}

// TestThroughAgent copies a tree in and back out through the agent's
// handlers, as vm cp does.
func TestThroughAgent(t *testing.T) {
	sess := session(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "tree")
	makeTree(t, src)
	guest := t.TempDir() // stands in for the guest's file system

	c, err := sess.Open(ctx, OpIn, InParams{Dest: guest, Name: "tree", Dir: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Push(c.(writeCloser), src, true, nil)
	c.Close()
	if err != nil || !res.OK || res.Target != filepath.Join(guest, "tree") {
		t.Fatalf("push: %+v %v", res, err)
	}
	back := t.TempDir()
	var out OutResult
	c, err = sess.Open(ctx, OpOut, OutParams{Path: filepath.Join(guest, "tree"), Recursive: true}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(c, out, back, "tree", nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	t.Cleanup(func() {
		os.Chmod(filepath.Join(guest, "tree", "ro"), 0o755)
		os.Chmod(filepath.Join(back, "tree", "ro"), 0o755)
	})
	want, got := treeOf(t, src), treeOf(t, filepath.Join(back, "tree"))
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}

	// Missing paths, either side, and a directory without -r.
	_, err = sess.Open(ctx, OpOut, OutParams{Path: "/no/such/path"}, nil)
	if !errors.Is(err, agent.ErrNotFoundCode) || !strings.Contains(err.Error(), "/no/such/path") {
		t.Errorf("pull of a missing path: %v", err)
	}
	_, err = sess.Open(ctx, OpIn, InParams{Dest: "/no/such/dir/x", Name: "x"}, nil)
	if !errors.Is(err, agent.ErrNotFoundCode) {
		t.Errorf("push to a missing folder: %v", err)
	}
	_, err = sess.Open(ctx, OpOut, OutParams{Path: guest}, nil)
	if err == nil || !strings.Contains(err.Error(), "-r") {
		t.Errorf("pull of a directory without -r: %v", err)
	}
}
