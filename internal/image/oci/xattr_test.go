package oci

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// TestFlattenXattrs: SCHILY and LIBARCHIVE records survive the flatten and
// read back with HeaderXattrs (the build sets them; image tests check the
// ext4 side).
func TestFlattenXattrs(t *testing.T) {
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
	got := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		xs, err := HeaderXattrs(hdr)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range xs {
			got[x.Path+" "+x.Name] = string(x.Value)
		}
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
}
