package oci

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

func TestReadXattrsAndDebugfsScript(t *testing.T) {
	img := imageOf(t, "amd64",
		layerOf(t,
			dir("bin/", 0o755),
			ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/ping", Mode: 0o755, Size: 4, ModTime: mtime,
				PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capNetRaw}}, body: "ping"},
			hardlink("bin/ping-again", "bin/ping"),
			ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "with space", Mode: 0o644, ModTime: mtime,
				PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hello world"}}},
			ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "libarchive/", Mode: 0o755, ModTime: mtime,
				PAXRecords: map[string]string{"LIBARCHIVE.xattr.user.a%20b": "dmFsdWU="}}},
		),
	)
	var buf bytes.Buffer
	if err := Flatten(img, &buf, nil); err != nil {
		t.Fatal(err)
	}
	xs, err := ReadXattrs(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, x := range xs {
		got[x.Path+" "+x.Name] = string(x.Value)
	}
	want := map[string]string{
		"bin/ping security.capability": capNetRaw,
		"with space user.note":         "hello world",
		"libarchive user.a b":          "value",
	}
	if len(got) != len(want) {
		t.Errorf("got %d xattrs %q, want %q", len(got), got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}

	if err := WriteDebugfsScript(&bytes.Buffer{}, []Xattr{{Path: "a\"b", Name: "user.x"}}, t.TempDir()); err == nil {
		t.Error("a path with a double quote was accepted")
	}

	// Through the real route: fakeroot tar -x, mkfs.ext4 -d, debugfs -w.
	tools := needTools(t)
	ext4 := buildExt4(t, tools, img)
	valueDir := t.TempDir()
	var script bytes.Buffer
	if err := WriteDebugfsScript(&script, xs, valueDir); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(valueDir, "cmds")
	if err := os.WriteFile(cmds, script.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools["debugfs"], "-w", "-f", cmds, ext4).CombinedOutput(); err != nil {
		t.Fatalf("debugfs -w: %v\n%s", err, out)
	}
	for _, c := range []struct{ path, want string }{
		{"/bin/ping", "security.capability (20) = 01 00 00 02 00 20 00"},
		{"/bin/ping-again", "security.capability (20)"}, // the same inode
		{`"/with space"`, `user.note (11) = "hello world"`},
		{"/libarchive", `user.a b (5) = "value"`},
	} {
		if out := runDebugfs(t, tools, ext4, "ea_list "+c.path); !strings.Contains(out, c.want) {
			t.Errorf("ea_list %s: want %q in\n%s", c.path, c.want, out)
		}
	}
}
