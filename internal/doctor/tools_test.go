package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSSH(t *testing.T) {
	f := newFixture(t)
	r := f.run(t, IDSSH)
	wantStatus(t, r, StatusFail)
	wantContains(t, "detail", r.Detail, "ssh (package openssh-client)")
	if r.Fix != "sudo apt-get install openssh-client" {
		t.Errorf("fix %q names the package more than once or not at all", r.Fix)
	}
	f.addTools(t, "ssh")
	r = f.run(t, IDSSH)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, filepath.Join(f.bin, "ssh"))
}

func TestToolsNotExecutable(t *testing.T) {
	f := newFixture(t)
	writeFile(t, filepath.Join(f.bin, "ssh"), "#!/bin/sh\n", 0o644)
	wantStatus(t, f.run(t, IDSSH), StatusFail)
}

func TestDiskToolsFromSbin(t *testing.T) {
	f := newFixture(t)
	sbin := filepath.Join(f.root, "sbin")
	for _, n := range []string{"e2fsck", "resize2fs", "debugfs"} {
		writeScript(t, filepath.Join(sbin, n), "exit 0")
	}
	wantStatus(t, f.run(t, IDDiskTools), StatusFail)
	f.env.SbinDirs = []string{sbin} // e2fsprogs is in sbin, outside a user's $PATH
	wantStatus(t, f.run(t, IDDiskTools), StatusOK)
}

func TestImageTools(t *testing.T) {
	t.Run("root, all missing", func(t *testing.T) {
		f := newFixture(t)
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "mmdebstrap (package mmdebstrap)", "mkfs.ext4 (package e2fsprogs)",
			"debugfs (package e2fsprogs)", "e2fsck (package e2fsprogs)")
		if r.Fix != "sudo apt-get install mmdebstrap e2fsprogs" {
			t.Errorf("fix %q", r.Fix)
		}
	})
	t.Run("root, some missing", func(t *testing.T) {
		f := newFixture(t)
		f.addTools(t, "mmdebstrap", "debugfs")
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusFail)
		if r.Fix != "sudo apt-get install e2fsprogs" {
			t.Errorf("fix %q, want only e2fsprogs", r.Fix)
		}
	})
	t.Run("root, complete", func(t *testing.T) {
		f := newFixture(t)
		f.addTools(t, "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck")
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "build sandboxes run as subordinate ids 2147483648-2147614719 (uids)")
	})
	t.Run("root without subordinate ids", func(t *testing.T) {
		f := newFixture(t)
		f.addTools(t, "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck")
		writeFile(t, f.env.SubIDs.SubUID, "", 0o644)
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "sandbox of subordinate ids", "has no entry for root")
		wantContains(t, "fix", r.Fix, "sudo usermod --add-subuids 2147483648-2147614719 --add-subgids 2147483648-2147614719 root")
	})
	t.Run("user without uidmap or subordinate ids", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		f.addTools(t, "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck")
		writeFile(t, f.env.SubIDs.SubUID, "other:100000:65536\n", 0o644)
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "newuidmap (package uidmap)", "newgidmap (package uidmap)",
			"has no entry for dev")
		wantContains(t, "fix", r.Fix, "sudo apt-get install uidmap",
			"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 dev")
	})
	t.Run("user with a small range", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		f.addTools(t, "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck", "newuidmap", "newgidmap")
		writeFile(t, f.env.SubIDs.SubUID, "dev:100000:1000\n", 0o644)
		writeFile(t, f.env.SubIDs.SubGID, "dev:100000:65536\n", 0o644)
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "no range of 65536 ids")
	})
	t.Run("user, complete (entry by uid)", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		f.addTools(t, "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck", "newuidmap", "newgidmap")
		writeFile(t, f.env.SubIDs.SubUID, "# comment\nother:1:2\n1000:100000:65536\n", 0o644)
		writeFile(t, f.env.SubIDs.SubGID, "dev:100000:65536\n", 0o644)
		r := f.run(t, IDImageTools)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "subordinate ids 100000-165535 (uids) and 100000-165535 (gids) of dev")
	})
}

// TestToolVersionCache: a tool's version is read once while its file
// stays the same, again once the file changes, and a failure is not kept.
func TestToolVersionCache(t *testing.T) {
	dir := t.TempDir()
	bin, runs := filepath.Join(dir, "tool"), filepath.Join(dir, "runs")
	write := func(version string, status int) {
		t.Helper()
		script := fmt.Sprintf("#!/bin/sh\necho run >> %q\necho %q\nexit %d\n", runs, version, status)
		// A new file renamed over the old one, as a package upgrade does.
		tmp := bin + ".new"
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		b, _ := os.ReadFile(runs)
		return strings.Count(string(b), "run")
	}
	ctx := context.Background()
	want := func(version string, wantErr bool, wantRuns int) {
		t.Helper()
		v, err := toolVersion(ctx, bin)
		if (err != nil) != wantErr || (!wantErr && v != version) {
			t.Errorf("toolVersion = %q, %v; want %q (error: %v)", v, err, version, wantErr)
		}
		if n := count(); n != wantRuns {
			t.Errorf("the tool ran %d times, want %d", n, wantRuns)
		}
	}
	write("tool 1.0", 0)
	want("tool 1.0", false, 1)
	want("tool 1.0", false, 1) // kept
	write("tool 2.0", 0)
	want("tool 2.0", false, 2) // replaced: read again
	write("broken", 1)
	want("", true, 3)
	want("", true, 4) // a failure runs again
}
