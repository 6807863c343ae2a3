package doctor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/store"
)

// mkext4 makes a small real ext4 image of the tree at dir.
func mkext4(t *testing.T, dir, img string) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		mkfs = "/usr/sbin/mkfs.ext4"
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", dir, img, "8M").CombinedOutput(); err != nil {
		t.Skipf("cannot make an ext4 image here (mkfs.ext4 -d: %v: %s)", err, out)
	}
}

func TestImageAgent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.env.PATH = os.Getenv("PATH")
	f.env.SbinDirs = []string{"/usr/sbin", "/sbin"}
	if _, ok := f.env.lookTool("debugfs"); !ok {
		t.Skip("debugfs (e2fsprogs) is not installed")
	}

	r := f.run(t, IDImageAgent)
	wantStatus(t, r, StatusSkip)
	wantContains(t, "detail", r.Detail, "no database")

	// Two images: one built after the agent existed, one before.
	withAgent := filepath.Join(f.root, "tree-new")
	writeFile(t, filepath.Join(withAgent, strings.TrimPrefix(AgentImagePath, "/")), "#!/bin/sh\n", 0o755)
	writeFile(t, filepath.Join(withAgent, "etc", "hostname"), "new\n", 0o644)
	withoutAgent := filepath.Join(f.root, "tree-old")
	writeFile(t, filepath.Join(withoutAgent, "etc", "hostname"), "old\n", 0o644)
	newImg := filepath.Join(f.env.Dirs.ImagesDir(), "aaa", "rootfs.ext4")
	oldImg := filepath.Join(f.env.Dirs.ImagesDir(), "bbb", "rootfs.ext4")
	mkdir(t, filepath.Dir(newImg))
	mkdir(t, filepath.Dir(oldImg))
	mkext4(t, withAgent, newImg)
	mkext4(t, withoutAgent, oldImg)

	mkdir(t, f.env.Dirs.State)
	st, err := store.Open(ctx, f.env.Dirs.Database())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	insert := func(id, name, path string) {
		if err := store.InsertImage(ctx, st.DB, &store.Image{ID: id, Name: name, Source: "debian:bookworm", Path: path}); err != nil {
			t.Fatal(err)
		}
	}
	insert("aaa", "fresh", newImg)
	r = f.run(t, IDImageAgent)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, AgentImagePath, "fresh")

	insert("bbb", "old", oldImg)
	r = f.run(t, IDImageAgent)
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "1 of 2 images lack "+AgentImagePath, "built before the agent existed", ": old")
	if strings.Contains(r.Detail, "fresh") {
		t.Errorf("detail %q names the image that has the agent", r.Detail)
	}
	if r.Fix != "banger image rm old && banger image build old --from debian:bookworm" {
		t.Errorf("fix %q", r.Fix)
	}

	// An image whose file is gone, and one that is not ext4, are reported
	// rather than taken for images without the agent.
	junk := filepath.Join(f.root, "junk.img")
	writeFile(t, junk, strings.Repeat("x", 4096), 0o644)
	insert("ccc", "gone", filepath.Join(f.root, "nowhere.ext4"))
	insert("ddd", "junk", junk)
	r = f.run(t, IDImageAgent)
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "image gone: image file", "image junk: debugfs cannot read", "Bad magic number")
	wantContains(t, "fix", r.Fix, "banger image rm old && banger image build old --from debian:bookworm", "banger image rm NAME")

	// Without debugfs the check cannot look inside images.
	f.env.PATH, f.env.SbinDirs = f.bin, nil
	r = f.run(t, IDImageAgent)
	wantStatus(t, r, StatusSkip)
	wantContains(t, "fix", r.Fix, "e2fsprogs")
}
