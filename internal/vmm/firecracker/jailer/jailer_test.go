package jailer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const mounts = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 UNIFIED cgroup2 rw,relatime 0 0
`

func TestHierarchiesAndLimits(t *testing.T) {
	dir := t.TempDir()
	unified := filepath.Join(dir, "unified")
	os.Mkdir(unified, 0o755)
	p := filepath.Join(dir, "mounts")
	os.WriteFile(p, []byte(strings.ReplaceAll(mounts, "UNIFIED", unified)), 0o644)
	h, err := ReadHierarchies(p)
	if err != nil {
		t.Fatal(err)
	}
	if h.Unified != unified || h.V1Dir("cpu") != "/sys/fs/cgroup/cpu" || h.V1Dir("memory") != "/sys/fs/cgroup/memory" || h.V1Dir("cpuset") != "" {
		t.Fatalf("hierarchies %+v", h)
	}
	// A hybrid host whose v2 hierarchy has no cpu or memory controller: v1.
	os.WriteFile(filepath.Join(unified, "cgroup.controllers"), []byte("hugetlb\n"), 0o644)
	v, cg, err := Limits(h, 2, 256, 128)
	if err != nil || v != 1 || !slices.Equal(cg, []string{"cpu.cfs_quota_us=200000", "memory.limit_in_bytes=402653184"}) {
		t.Fatalf("hybrid: %d %q %v", v, cg, err)
	}
	o := Options{ID: "vm1", ExecFile: "/opt/fc/firecracker", CgroupVersion: v, Cgroups: cg}
	if dirs, err := CgroupDirs(h, o); err != nil || !slices.Equal(dirs, []string{"/sys/fs/cgroup/cpu/firecracker/vm1", "/sys/fs/cgroup/memory/firecracker/vm1"}) {
		t.Fatalf("v1 dirs %q %v", dirs, err)
	}
	// A v2 host that offers them: v2.
	os.WriteFile(filepath.Join(unified, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	v, cg, err = Limits(h, 1, 512, 128)
	if err != nil || v != 2 || !slices.Equal(cg, []string{"cpu.max=100000 100000", "memory.max=671088640"}) {
		t.Fatalf("v2: %d %q %v", v, cg, err)
	}
	o.CgroupVersion, o.Cgroups = v, cg
	if dirs, err := CgroupDirs(h, o); err != nil || !slices.Equal(dirs, []string{filepath.Join(unified, "firecracker/vm1")}) {
		t.Fatalf("v2 dirs %q %v", dirs, err)
	}
	// Neither: no limits, and the error says why.
	if v, _, err := Limits(Hierarchies{}, 1, 512, 128); v != 0 || err == nil {
		t.Fatalf("no hierarchy: %d %v", v, err)
	}
}

func TestArgvAndLayout(t *testing.T) {
	o := Options{ID: "vm1", ExecFile: "/b/firecracker", UID: 7, GID: 8, ChrootBase: "/s/j", CgroupVersion: 2, Cgroups: []string{"cpu.max=1 2"}}
	got := Argv("/b/jailer", o, "--api-sock", "/api.sock")
	want := []string{"/b/jailer", "--id", "vm1", "--exec-file", "/b/firecracker", "--uid", "7", "--gid", "8",
		"--chroot-base-dir", "/s/j", "--cgroup-version", "2", "--cgroup", "cpu.max=1 2", "--", "--api-sock", "/api.sock"}
	if !slices.Equal(got, want) {
		t.Fatalf("argv\n got %q\nwant %q", got, want)
	}
	if d := ChrootDir("/s/j", "/b/firecracker", "vm1"); d != "/s/j/firecracker/vm1/root" {
		t.Fatalf("chroot %s", d)
	}
	if p := PIDFile("/b/firecracker"); p != "/firecracker.pid" {
		t.Fatalf("pid file %s", p)
	}
}
