package jailersim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm/firecracker/jailer"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// bins builds the jailer simulator and the probe (a static stand-in for
// Firecracker that reports what it was left) in a folder anyone may read.
func bins(t *testing.T) (sim, probe string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testhost.Skip(t, "the jailer (and its simulator) runs as root")
	}
	dir, err := os.MkdirTemp("", "jsim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sim, probe = filepath.Join(dir, "jailer-simulator"), filepath.Join(dir, "probe")
	for out, pkg := range map[string]string{sim: "./cmd/jailer-simulator", probe: "./testdata/probe"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	return sim, probe
}

type report struct {
	Args     []string
	UID, GID int
	Groups   []int
	Env      []string
	FDs      []int
	Root     []string
	NoFile   uint64
	Cwd      string
	HostEtc  bool
}

// TestEffects runs the probe through the simulator with cgroup limits, an
// inherited descriptor and a secret in the environment, and checks what
// the jailer does: the layout, the copy, the device nodes, the folders,
// the pid file, the cgroups, and what the exec'd probe is left with.
func TestEffects(t *testing.T) {
	sim, probe := bins(t)
	runAs := vmmtest.RunAs(t)
	base := t.TempDir()
	h, err := jailer.ReadHierarchies(jailer.ProcMounts)
	if err != nil {
		t.Fatal(err)
	}
	version, limits, lerr := jailer.Limits(h, 1, 64, 0)
	if lerr != nil {
		testhost.Skip(t, "cgroups: %v", lerr)
	}
	o := jailer.Options{ID: "probe-1", ExecFile: probe, UID: runAs.UID, GID: runAs.GID, ChrootBase: base, CgroupVersion: version, Cgroups: limits}
	cgDirs, _ := jailer.CgroupDirs(h, o)
	t.Cleanup(func() {
		for _, d := range cgDirs {
			unix.Rmdir(d)
			unix.Rmdir(filepath.Dir(d)) // the jailer's parent, if no other test uses it
		}
	})
	leak, err := os.Open(probe)
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	cmd := exec.Command(sim, jailer.Argv(sim, o, "--extra", "x")[1:]...)
	cmd.Env = []string{"SECRET=1", "FCSIM_GUEST=fake"}
	cmd.ExtraFiles = []*os.File{leak}
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("the probe said nothing: %v", err)
	}
	var r report
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	root := jailer.ChrootDir(base, probe, "probe-1")
	// What the probe was left.
	if len(r.Args) < 8 || r.Args[0] != "/probe" || r.Args[1] != "--id" || r.Args[2] != "probe-1" || r.Args[3] != "--start-time-us" ||
		r.Args[5] != "--start-time-cpu-us" || r.Args[7] != "--parent-cpu-time-us" || !slices.Equal(r.Args[9:], []string{"--extra", "x"}) {
		t.Errorf("probe argv %q", r.Args)
	}
	if r.UID != int(runAs.UID) || r.GID != int(runAs.GID) || len(r.Groups) != 0 {
		t.Errorf("probe runs as uid %d gid %d groups %v, want %d %d none", r.UID, r.GID, r.Groups, runAs.UID, runAs.GID)
	}
	if len(r.Env) != 2 || !strings.HasPrefix(r.Env[1], "FCSIM_LAUNCHER_FD=") || r.Env[0] != "FCSIM_GUEST=fake" {
		t.Errorf("probe environment %q: want the simulator's settings and the launcher only", r.Env)
	}
	launcherFD, _ := strconv.Atoi(strings.TrimPrefix(r.Env[len(r.Env)-1], "FCSIM_LAUNCHER_FD="))
	if !slices.Equal(r.FDs, []int{0, 1, 2, launcherFD}) {
		t.Errorf("probe descriptors %v, want 0 1 2 and the launcher's %d (the inherited one closed)", r.FDs, launcherFD)
	}
	if !slices.Equal(r.Root, []string{"dev", "probe", "probe.pid", "run"}) || r.HostEtc || r.Cwd != "/" {
		t.Errorf("probe root %v (host /etc %v, cwd %s): want the jail", r.Root, r.HostEtc, r.Cwd)
	}
	if r.NoFile != 2048 {
		t.Errorf("no-file limit %d, want the jailer's 2048", r.NoFile)
	}
	// The jail as the host sees it.
	for p, want := range map[string]string{"": "dir 700", "dev": "dir 700", "dev/net": "dir 700", "run": "dir 700",
		"dev/kvm": "chr 10:232", "dev/net/tun": "chr 10:200", "dev/urandom": "chr 1:9", "probe": "file 755"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		got := fmt.Sprintf("file %o", st.Mode&0o777)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			got = fmt.Sprintf("dir %o", st.Mode&0o777)
		case unix.S_IFCHR:
			got = fmt.Sprintf("chr %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if got != want || st.Uid != runAs.UID || st.Gid != runAs.GID {
			t.Errorf("/%s is %s owned by %d:%d, want %s owned by %d:%d", p, got, st.Uid, st.Gid, want, runAs.UID, runAs.GID)
		}
	}
	a, _ := os.Stat(probe)
	b, _ := os.Stat(filepath.Join(root, "probe"))
	if os.SameFile(a, b) || a.Size() != b.Size() {
		t.Errorf("the exec file is not copied into the jail")
	}
	if pid, _ := os.ReadFile(filepath.Join(root, "probe.pid")); string(pid) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("pid file %q, the jailer's pid (which execs the probe) is %d", pid, cmd.Process.Pid)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	for _, d := range cgDirs {
		if !strings.HasSuffix(d, "/probe/probe-1") {
			t.Errorf("cgroup %s, want <hierarchy>/probe/probe-1", d)
		}
		if !strings.Contains(string(cg), "/probe/probe-1\n") {
			t.Errorf("the probe is not in its cgroups:\n%s", cg)
		}
		if _, err := os.Stat(d); err != nil {
			t.Errorf("cgroup %s: %v", d, err)
		}
	}
}

// TestRefuses: the jailer's argument and state checks, each with its
// message and exit status 1.
func TestRefuses(t *testing.T) {
	sim, probe := bins(t)
	base := t.TempDir()
	ok := []string{"--id", "vm-1", "--exec-file", probe, "--uid", "65534", "--gid", "65534", "--chroot-base-dir", base}
	with := func(extra ...string) []string { return append(slices.Clone(ok), extra...) }
	set := func(k, v string) []string {
		a := slices.Clone(ok)
		a[slices.Index(a, k)+1] = v
		return a
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{ok[2:], "Argument 'id' required, but not found."},
		{set("--id", "vm_1"), "Invalid instance ID: Invalid char (_) at position 2"},
		{set("--id", strings.Repeat("a", 65)), "Invalid instance ID: Invalid len (65)"},
		{append([]string{"--id=vm-1"}, ok[2:]...), "Found argument 'id=vm-1' which wasn't expected"},
		{with("--id", "vm-2"), "The argument 'id' was provided more than once."},
		{set("--exec-file", "/nonexistent"), "Failed to canonicalize path /nonexistent: No such file or directory (os error 2)"},
		{set("--exec-file", base), "is not a file"},
		{set("--chroot-base-dir", probe), "is not a directory"},
		{set("--uid", "-1"), "Invalid uid: -1"},
		{set("--gid", "x"), "Invalid gid: x"},
		{with("--cgroup-version", "x"), "x is an invalid cgroup version specifier"},
		{with("--cgroup", "cpu.max"), "Invalid format for cgroups: cpu.max"},
		{with("--cgroup", "../cpu.max=1"), "Cgroup invalid file: ../cpu.max=1"},
		{with("--cgroup", "nosuch.max=1"), "Controller nosuch is unavailable"},
		{with("--parent-cgroup", "../x"), "Parent cgroup path is invalid"},
		{with("--resource-limit", "no-file"), "Invalid format for resources limits: no-file"},
		{with("--resource-limit", "cores=1"), "Invalid resource argument: cores"},
		{with("--resource-limit", "fsize=x"), "Invalid limit value for resource: x"},
	} {
		out, err := exec.Command(sim, c.args...).CombinedOutput()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
			t.Errorf("jailer %q: %v\n%s\nwant exit status 1 and %q", c.args, err, out, c.want)
		}
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("refused arguments left %v in the chroot base", ents)
	}
	// A jail left by an earlier run is not reused: the jailer fails
	// making its device nodes again. Cleaning up is the caller's.
	for i, want := range []string{"", "Failed to create /dev/net/tun via mknod inside the jail: File exists (os error 17)"} {
		cmd := exec.Command(sim, ok...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if (want == "") != (err == nil) || !strings.Contains(string(out), want) {
			t.Errorf("run %d: %v\n%s\nwant %q", i+1, err, out, want)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "probe", "vm-1", "root", "dev")); err != nil {
		t.Errorf("the jail of the run is gone: %v", err)
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}
