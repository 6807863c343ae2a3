package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/jailer"
	"github.com/bangerhq/banger/internal/vmm/proc"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

var jailerSim struct {
	once sync.Once
	bin  string
	err  error
}

// jailerSimBinary builds the jailer simulator once per test binary, beside
// the Firecracker simulator.
func jailerSimBinary(t *testing.T) string {
	t.Helper()
	fakeBinary(t)
	jailerSim.once.Do(func() {
		jailerSim.bin = filepath.Join(fake.dir, "jailer-simulator")
		cmd := exec.Command("go", "build", "-o", jailerSim.bin, "github.com/bangerhq/banger/internal/vmm/firecracker/jailersim/cmd/jailer-simulator")
		if out, err := cmd.CombinedOutput(); err != nil {
			jailerSim.err = fmt.Errorf("build jailer-simulator: %v\n%s", err, out)
		}
	})
	if jailerSim.err != nil {
		t.Fatal(jailerSim.err)
	}
	return jailerSim.bin
}

// jailedDriver is testDriver launching through the jailer simulator, with
// its chroots in a fresh folder; the jailed simulator opens TAPs through
// the jail's own /dev/net/tun, as Firecracker does. The jailer needs root.
func jailedDriver(t *testing.T) (*Driver, string) {
	if os.Geteuid() != 0 {
		testhost.Skip(t, "the jailer (and its simulator) runs as root")
	}
	log, _ := vmmtest.Logger(t)
	d := testDriver(t, fakeBinary(t), log)
	t.Setenv("FCSIM_DEV_TUN", "")
	base := filepath.Join(shortDir(t), "j")
	t.Cleanup(func() {
		// The jailer's parent cgroups, when no other test uses them.
		h, _ := jailer.ReadHierarchies(jailer.ProcMounts)
		for _, m := range append(h.V1, jailer.MountPoint{Dir: h.Unified}) {
			if m.Dir != "" {
				unix.Rmdir(filepath.Join(m.Dir, "firecracker-simulator"))
			}
		}
	})
	return d.WithJailer(jailerSimBinary(t), base, true), base
}

func cgroupFile(t *testing.T, dir, file string) string {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestJailedLifecycle runs a VM through the jailer simulator: the VMM is
// the exec file's copy in <base>/<exec name>/<id>/root, chrooted there
// (its root holds its sockets and the hard-linked kernel, initrd and
// disk), runs as the VM's uid, in cgroups limited to the VM's shape, with
// its sockets reachable from the host at their chroot paths; a fresh
// Driver re-adopts it, and Stop leaves neither chroot nor cgroup behind.
func TestJailedLifecycle(t *testing.T) {
	d, base := jailedDriver(t)
	spec := testSpec(t, "jailed-1")
	if spec.RunAs == nil {
		testhost.Skip(t, "no VMM user")
	}
	ctx := context.Background()
	t0 := time.Now()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	t.Logf("jailed Start: %v; argv %q; notes %q", time.Since(t0).Round(time.Millisecond), st.Argv, st.Notes)

	root := filepath.Join(base, "firecracker-simulator", "jailed-1", "root")
	if st.Chroot != root || st.ControlSocket != root+"/api.sock" || st.AgentSocket != root+"/vsock.sock" {
		t.Fatalf("state chroot %q api %q vsock %q, want them in %s", st.Chroot, st.ControlSocket, st.AgentSocket, root)
	}
	procRoot := fmt.Sprintf("/proc/%d/root", st.PID)
	for name, host := range map[string]string{"vmlinux": spec.Kernel, "initrd": spec.Initrd, "rootfs": spec.Disk} {
		a, err1 := os.Stat(filepath.Join(procRoot, name))
		b, err2 := os.Stat(host)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("the VMM's /%s is not %s linked in (%v %v)", name, host, err1, err2)
		}
	}
	if _, err := os.Stat(filepath.Join(procRoot, "api.sock")); err != nil {
		t.Errorf("the VMM's root has no api.sock: it is not chrooted in %s: %v", root, err)
	}
	if _, err := os.Stat(filepath.Join(procRoot, "etc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the VMM sees the host's /etc: %v", err)
	}
	status := vmmtest.Status(t, st.PID)
	if uid := strings.Fields(status["Uid"]); len(uid) == 0 || uid[0] != strconv.Itoa(int(spec.RunAs.UID)) {
		t.Errorf("the VMM runs as uid %v, want %d", status["Uid"], spec.RunAs.UID)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.PID)); filepath.Base(exe) != "firecracker-simulator" {
		t.Errorf("the VMM is %s", exe)
	}
	for _, dev := range []string{"dev/kvm", "dev/net/tun"} {
		fi, err := os.Stat(filepath.Join(root, dev))
		if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
			t.Errorf("no %s in the jail: %v", dev, err)
		}
	}
	pid, _ := os.ReadFile(filepath.Join(root, "firecracker-simulator.pid"))
	if string(pid) != strconv.Itoa(st.PID) {
		t.Errorf("pid file says %q, the VMM is %d", pid, st.PID)
	}
	// The cgroups fit the VM's shape, and hold the VMM.
	h, err := jailer.ReadHierarchies(jailer.ProcMounts)
	if err != nil {
		t.Fatal(err)
	}
	version, _, lerr := jailer.Limits(h, spec.CPUs, spec.MemoryMiB, jailMemoryOverheadMiB)
	if lerr != nil {
		t.Logf("no cgroup limits on this host: %v", lerr)
	}
	if lerr == nil && len(st.Cgroups) == 0 {
		t.Fatalf("no cgroups in the state")
	}
	mem := strconv.Itoa((spec.MemoryMiB + jailMemoryOverheadMiB) << 20)
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.PID))
	for _, dir := range st.Cgroups {
		if !strings.HasSuffix(dir, "/firecracker-simulator/jailed-1") {
			t.Errorf("cgroup %s is not <hierarchy>/firecracker-simulator/jailed-1", dir)
		}
		if !strings.Contains(string(cg), "/firecracker-simulator/jailed-1\n") {
			t.Errorf("the VMM is not in its cgroup:\n%s", cg)
		}
		switch {
		case version == 2:
			if got := cgroupFile(t, dir, "cpu.max"); got != "200000 100000" {
				t.Errorf("cpu.max = %q", got)
			}
			if got := cgroupFile(t, dir, "memory.max"); got != mem {
				t.Errorf("memory.max = %q, want %s", got, mem)
			}
		case strings.Contains(dir, "/cpu/"):
			if got := cgroupFile(t, dir, "cpu.cfs_quota_us"); got != "200000" {
				t.Errorf("cpu.cfs_quota_us = %q", got)
			}
		case strings.Contains(dir, "/memory/"):
			if got := cgroupFile(t, dir, "memory.limit_in_bytes"); got != mem {
				t.Errorf("memory.limit_in_bytes = %q, want %s", got, mem)
			}
		}
	}
	// A daemon that lost its record finds it by the disk it holds, under
	// the disk's name in the jail.
	found := func(aliases ...string) bool {
		ids, err := proc.Holding(spec.Disk, aliases...)
		return err == nil && slices.ContainsFunc(ids, func(id proc.ID) bool { return id.PID == st.PID })
	}
	if found() || !found(d.DiskAliases()...) {
		t.Errorf("the jailed VMM is found holding the disk without the alias %v, or not with it %v", found(), found(d.DiskAliases()...))
	}
	// A fresh driver adopts it, and reaches its agent through the jail.
	d2, _ := jailedDriver(t)
	if err := d2.Recover(ctx, st); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if err := d2.Stop(ctx, st, false, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d2.Alive(st) {
		t.Fatal("the VMM is alive after Stop")
	}
	assertJailGone(t, root, st.Cgroups)
	for _, cg := range st.Cgroups {
		unix.Rmdir(filepath.Dir(cg)) // the jailer's parent, if no other test uses it
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, LogFileName)); err != nil {
		t.Errorf("firecracker's log was not kept out of the jail: %v", err)
	}
}

func assertJailGone(t *testing.T, root string, cgroups []string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Dir(root)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the jail %s is left behind (%v)", filepath.Dir(root), err)
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s is left behind", cg)
		}
	}
}

// TestJailedSeesOnlyTheJail: a jailed Firecracker opens files by their
// paths in its chroot, so a driver that sent host paths, or forgot to link
// a file in, fails at configuration; and the failed start leaves nothing.
func TestJailedSeesOnlyTheJail(t *testing.T) {
	d, _ := jailedDriver(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		tamper func(p *launchPlan, spec vmm.Spec)
		want   string
	}{
		{"host paths", func(p *launchPlan, spec vmm.Spec) { p.view.Kernel = spec.Kernel }, "The kernel file cannot be opened"},
		{"disk not linked", func(p *launchPlan, spec vmm.Spec) { os.Remove(p.chroot + jailDisk) }, "configure root drive"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := testSpec(t, "jailed-2")
			if spec.RunAs == nil {
				testhost.Skip(t, "no VMM user")
			}
			bin, _ := d.Binary()
			p, err := d.planJail(spec, bin)
			if err != nil {
				t.Fatal(err)
			}
			c.tamper(&p, spec)
			st, err := d.launch(ctx, spec, p)
			if err == nil {
				vmmtest.EnsureStopped(t, st)
				t.Fatalf("a jailed start with %s succeeded", c.name)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			assertJailGone(t, p.chroot, p.cgroups)
			for _, cg := range p.cgroups {
				unix.Rmdir(filepath.Dir(cg))
			}
			if pids := processesUsing("jailed-2"); len(pids) != 0 {
				t.Fatalf("processes left: %v", pids)
			}
		})
	}
}

// TestJailedAcrossFileSystems: a kernel and initrd on another file system
// than the jail (a tmpfs here) cannot be hard-linked: they are bind-mounted
// into the chroot, and Stop unmounts them before it removes the jail.
func TestJailedAcrossFileSystems(t *testing.T) {
	d, _ := jailedDriver(t)
	spec := testSpec(t, "jailed-3")
	if spec.RunAs == nil {
		testhost.Skip(t, "no VMM user")
	}
	other := filepath.Join(shortDir(t), "tmpfs")
	os.Mkdir(other, 0o755)
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, "size=16m,mode=0755"); err != nil {
		testhost.Skip(t, "cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(other, unix.MNT_DETACH) })
	for _, p := range []*string{&spec.Kernel, &spec.Initrd} {
		b, err := os.ReadFile(*p)
		if err != nil {
			t.Fatal(err)
		}
		*p = filepath.Join(other, filepath.Base(*p))
		if err := os.WriteFile(*p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	mounts := func() string {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		return string(b)
	}
	for name, host := range map[string]string{"vmlinux": spec.Kernel, "initrd": spec.Initrd} {
		a, err1 := os.Stat(filepath.Join(st.Chroot, name))
		b, err2 := os.Stat(host)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("/%s in the jail is not %s bound in (%v %v)", name, host, err1, err2)
		}
		if !strings.Contains(mounts(), filepath.Join(st.Chroot, name)) {
			t.Errorf("no bind mount on /%s in the jail", name)
		}
	}
	if err := d.Stop(ctx, st, true, 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if strings.Contains(mounts(), st.Chroot) {
		t.Errorf("bind mounts into the jail are left after Stop")
	}
	assertJailGone(t, st.Chroot, st.Cgroups)
	for _, cg := range st.Cgroups {
		unix.Rmdir(filepath.Dir(cg))
	}
	for _, p := range []string{spec.Kernel, spec.Initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the bound file %s is gone: %v", p, err)
		}
	}
}

// TestJailSweep: the jail of a VMM that died unrecorded (no Stop) is
// removed by Sweep, chroot and cgroups, while a running VM's is kept.
func TestJailSweep(t *testing.T) {
	d, _ := jailedDriver(t)
	ctx := context.Background()
	var sts []vmm.State
	for _, id := range []string{"sweep-1", "sweep-2"} {
		spec := testSpec(t, id)
		if spec.RunAs == nil {
			testhost.Skip(t, "no VMM user")
		}
		st, err := d.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		vmmtest.EnsureStopped(t, st)
		sts = append(sts, st)
	}
	dead, live := sts[0], sts[1]
	proc.Signal(dead.PID, dead.StartTime, syscall.SIGKILL)
	waitFor(t, 5*time.Second, "the killed VMM to exit", func() bool { return !d.Alive(dead) })
	if err := d.Sweep(ctx, map[string]bool{"sweep-2": true}); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	assertJailGone(t, dead.Chroot, dead.Cgroups)
	if _, err := os.Stat(live.Chroot); err != nil || !d.Alive(live) {
		t.Fatalf("the running VM's jail was swept: %v", err)
	}
	// A jail whose VMM still answers is never removed, even unnamed.
	if err := d.Sweep(ctx, nil); err == nil || !strings.Contains(err.Error(), "still answers") {
		t.Fatalf("Sweep of a live VMM's jail: %v", err)
	}
	if _, err := os.Stat(live.Chroot); err != nil {
		t.Fatalf("a live VMM's jail was swept: %v", err)
	}
	if err := d.Stop(ctx, live, true, 0); err != nil {
		t.Fatal(err)
	}
	assertJailGone(t, live.Chroot, live.Cgroups)
	for _, cg := range live.Cgroups {
		unix.Rmdir(filepath.Dir(cg))
	}
}

// TestJailCost compares Start to InstanceStart answered (the simulator's
// fake guest) with and without the jailer simulator, side by side in one
// run, alternating: what the jail costs (links, cgroups, the jailer's
// copy of the binary, pivot_root, the launcher). It runs only when asked:
//
//	BANGER_JAIL_COST=20 go test -count=1 -run TestJailCost -v ./internal/vmm/firecracker/
func TestJailCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BANGER_JAIL_COST"))
	if n <= 0 {
		t.Skip("a measurement: set BANGER_JAIL_COST=N to run it")
	}
	open := testDriver(t, fakeBinary(t), slog.New(slog.DiscardHandler))
	jailed, _ := jailedDriver(t)
	// The unjailed simulator opens TAPs through the test's TUN node, the
	// jailed one through its jail's.
	tun := map[*Driver]string{open: open.devTUN, jailed: ""}
	ctx := context.Background()
	var times [2][]time.Duration
	for i := 0; i < n; i++ {
		for k, d := range []*Driver{open, jailed} {
			spec := testSpec(t, fmt.Sprintf("cost-%d-%d", k, i))
			os.Setenv("FCSIM_DEV_TUN", tun[d])
			t0 := time.Now()
			st, err := d.Start(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			times[k] = append(times[k], time.Since(t0))
			if err := d.Stop(ctx, st, true, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	med := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
	t.Logf("Start to InstanceStart, median of %d: unjailed %v, jailed %v (%.2fx)", n,
		med(times[0]).Round(time.Microsecond), med(times[1]).Round(time.Microsecond), float64(med(times[1]))/float64(med(times[0])))
}

// TestJailedLinkedBinary: the jailer names the chroot after the exec
// file's real name (it canonicalizes --exec-file), so a firecracker that
// is a link (to firecracker-v1.16.1-x86_64, say) is jailed, found and
// cleaned up under the target's name.
func TestJailedLinkedBinary(t *testing.T) {
	d, base := jailedDriver(t)
	dir := shortDir(t)
	os.Chmod(dir, 0o755)
	link := filepath.Join(dir, "firecracker")
	if err := os.Symlink(fakeBinary(t), link); err != nil {
		t.Fatal(err)
	}
	d.bin = link
	spec := testSpec(t, "linked-1")
	if spec.RunAs == nil {
		testhost.Skip(t, "no VMM user")
	}
	ctx := context.Background()
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	if want := filepath.Join(base, "firecracker-simulator", "linked-1", "root"); st.Chroot != want {
		t.Fatalf("chroot %s, want %s (the jailer's, named after the link's target)", st.Chroot, want)
	}
	proc.Signal(st.PID, st.StartTime, syscall.SIGKILL)
	waitFor(t, 5*time.Second, "the killed VMM to exit", func() bool { return !d.Alive(st) })
	if err := d.Sweep(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertJailGone(t, st.Chroot, st.Cgroups)
}

// TestEndLaunch: EndLaunch kills the jailed VMM of a VM by the pid its
// jailer wrote, and only a process whose root is that jail: a pid file
// naming another process (the VMM user can write it) kills nothing.
func TestEndLaunch(t *testing.T) {
	d, _ := jailedDriver(t)
	ctx := context.Background()
	spec := testSpec(t, "endlaunch")
	if spec.RunAs == nil {
		testhost.Skip(t, "no VMM user")
	}
	st, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.EnsureStopped(t, st)
	if n, err := d.EndLaunch(ctx, "no-such-vm"); n != 0 || err != nil {
		t.Fatalf("EndLaunch of a VM without a jail: %d, %v", n, err)
	}
	bin, _ := d.Binary()
	bin, _ = execFile(bin)
	pidFile := filepath.Join(st.Chroot, jailer.PIDFile(bin))
	good, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the jailer's pid file: %v", err)
	}
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644)
	if n, err := d.EndLaunch(ctx, "endlaunch"); n != 0 || err != nil {
		t.Fatalf("EndLaunch with a pid file naming another process: %d, %v", n, err)
	}
	// A FIFO or a link in its place is refused at once, not waited on or
	// followed.
	os.Remove(pidFile)
	if err := unix.Mkfifo(pidFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := d.EndLaunch(ctx, "endlaunch"); n != 0 || err == nil {
		t.Fatalf("EndLaunch with a FIFO for a pid file: %d, %v", n, err)
	}
	os.Remove(pidFile)
	other := filepath.Join(t.TempDir(), "pid")
	os.WriteFile(other, good, 0o644)
	os.Symlink(other, pidFile)
	if n, err := d.EndLaunch(ctx, "endlaunch"); n != 0 || err == nil {
		t.Fatalf("EndLaunch with a link for a pid file: %d, %v", n, err)
	}
	os.Remove(pidFile)
	os.WriteFile(pidFile, good, 0o644)
	if n, err := d.EndLaunch(ctx, "endlaunch"); n != 1 || err != nil || d.Alive(st) {
		t.Fatalf("EndLaunch: %d, %v; the VMM alive: %v", n, err, d.Alive(st))
	}
	if err := d.Sweep(ctx, nil); err != nil {
		t.Fatalf("Sweep after EndLaunch: %v", err)
	}
	assertJailGone(t, st.Chroot, st.Cgroups)
	for _, cg := range st.Cgroups {
		unix.Rmdir(filepath.Dir(cg))
	}
}
