package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

// conformanceStopTimeout is the daemon's graceful stop timeout in the
// conformance suite (BANGER_STOP_TIMEOUT): long enough for a TCG guest to
// power off under load, short enough that the escalation step stays cheap.
const conformanceStopTimeout = 20 * time.Second

// conformanceEnv is what an env running vmConformance adds to its CLI (and
// so to its daemon's) environment.
var conformanceEnv = []string{"BANGER_STOP_TIMEOUT=" + conformanceStopTimeout.String()}

// vmConformance is the VM lifecycle every VMM driver must pass through the
// daemon and the CLI, written once and run for QEMU (TestVMLifecycle) and
// for Firecracker on its simulator (TestFirecrackerSimulator). For the
// running VM name: ssh (output, exit status, a file written), the agent's
// ping over its own channel, a stopped agent not answering within the
// timeout, a restart that keeps the disk, the console log, a SIGKILLed
// daemon whose successor adopts the VM, a SIGKILLed VMM noticed (stopped,
// TAP gone, last error), a graceful stop that escalates to SIGTERM when the
// guest ignores it, stop --force, rm refused while running, rm, and nothing
// left behind. It logs each part's time.
func vmConformance(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	step := stepLogger(t)

	// SSH: output, exit status, a file written.
	if out := e.must(ctx, "vm", "ssh", name, "--", "cat", "/etc/hostname"); strings.TrimSpace(out) != name {
		t.Fatalf("hostname in guest = %q", out)
	}
	if r := e.banger(ctx, "vm", "ssh", name, "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("remote exit status: got %d, want 7 (stderr %s)", r.code, r.stderr)
	}
	e.must(ctx, "vm", "ssh", name, "--", "sh", "-c", "echo banger-was-here > /root/marker && sync")
	step("ssh")

	// The guest agent answers over its own channel (not the network).
	if out := e.must(ctx, "vm", "ping", name); !strings.Contains(out, name+" is alive") {
		t.Fatalf("vm ping: %s", out)
	}
	// A guest whose agent is stopped: running, but not answering, within the timeout.
	e.must(ctx, "vm", "ssh", name, "--", "systemctl", "stop", "banger-vsock-pingd")
	start := time.Now()
	r := e.banger(ctx, "vm", "ping", "--timeout", "2s", name)
	if took := time.Since(start); r.code == 0 || !strings.Contains(r.stdout, "does not answer") || took > 6*time.Second {
		t.Fatalf("ping of a guest without agent: exit %d after %s: %s %s", r.code, took, r.stdout, r.stderr)
	}
	if got := e.vm(ctx, name); got.State != api.StateRunning {
		t.Fatalf("VM with a stopped agent shows %s, want running", got.State)
	}
	step("agent ping, and a stopped agent")

	// Restart keeps the disk.
	e.must(ctx, "vm", "restart", name)
	if out := e.must(ctx, "vm", "ssh", name, "--", "cat", "/root/marker"); strings.TrimSpace(out) != "banger-was-here" {
		t.Fatalf("file after restart = %q", out)
	}
	if out := e.must(ctx, "vm", "ping", name); !strings.Contains(out, name+" is alive") {
		t.Fatalf("vm ping after restart: %s", out)
	}
	// The stop of the restart was graceful: the guest powered off on
	// request (no escalation).
	if log, _ := os.ReadFile(filepath.Join(e.root, "state", "banger", "bangerd.log")); !strings.Contains(string(log), "exited after the guest shut down") {
		t.Fatalf("the restart's stop was not graceful (no \"exited after the guest shut down\" in the daemon log):\n%s", e.daemonLogTail())
	}
	v := e.vm(ctx, name)
	// The console log is readable.
	if out := e.must(ctx, "vm", "logs", name); !strings.Contains(out, "Linux version") {
		t.Fatalf("vm logs has no kernel banner:\n%.500s", out)
	}
	step("restart (graceful stop, boot), disk kept, agent back")

	// SIGKILL the daemon: the VM keeps running and the next daemon adopts it.
	st := e.daemonStatus(ctx)
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(st.PID, 0) != nil })
	after := e.vm(ctx, name) // starts a new daemon
	if after.State != api.StateRunning || after.PID != v.PID {
		t.Fatalf("after daemon SIGKILL: state %s pid %d, want running pid %d", after.State, after.PID, v.PID)
	}
	if st2 := e.daemonStatus(ctx); st2.PID == st.PID {
		t.Fatalf("daemon pid unchanged: %d", st2.PID)
	}
	e.must(ctx, "vm", "ssh", name, "--", "true")
	if out := e.must(ctx, "vm", "ping", name); !strings.Contains(out, name+" is alive") {
		t.Fatalf("vm ping after re-adoption: %s", out)
	}
	step("daemon SIGKILL, re-adoption")

	// SIGKILL the VMM: the VM becomes stopped and its TAP disappears.
	if err := syscall.Kill(after.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "VM to be reported stopped", func() bool {
		return e.vm(ctx, name).State == api.StateStopped
	})
	if out, err := e.inNetns("ip", "link", "show", after.TAP); err == nil {
		t.Fatalf("TAP %s still exists after the VMM died:\n%s", after.TAP, out)
	}
	if got := e.vm(ctx, name); !strings.Contains(got.LastError, "exited") {
		t.Fatalf("last error after VMM death = %q", got.LastError)
	}
	if pids := processesUsing(filepath.Join(e.root, "state", "banger", "vms")); len(pids) != 0 {
		t.Fatalf("processes still hold the VM's files after its VMM was killed: %v", pids)
	}
	step("VMM SIGKILL noticed")

	// A guest that ignores the stop request (its power key): the stop
	// escalates to SIGTERM after the timeout.
	e.must(ctx, "vm", "start", name)
	e.must(ctx, "vm", "ssh", name, "--", "sh", "-c",
		`mkdir -p /run/systemd/logind.conf.d && printf '[Login]\nHandlePowerKey=ignore\n' > /run/systemd/logind.conf.d/zz-banger-test.conf && systemctl restart systemd-logind`)
	step("start")
	start = time.Now()
	e.must(ctx, "vm", "stop", name)
	took := time.Since(start)
	if got := e.vm(ctx, name); got.State != api.StateStopped {
		t.Fatalf("after an escalated stop: %s", got.State)
	}
	if took < conformanceStopTimeout {
		t.Fatalf("vm stop of a guest ignoring it took %s, less than the stop timeout %s: the guest did not ignore it, so the escalation is untested", took, conformanceStopTimeout)
	}
	if log := e.daemonLogTail(); !strings.Contains(log, "guest did not shut down in time; terminating") {
		t.Fatalf("daemon log does not show the escalation:\n%s", log)
	}
	step("graceful stop escalated to SIGTERM")

	// Start again: rm refuses a running VM; stop --force; rm.
	e.must(ctx, "vm", "start", name)
	if stderr := e.fails(ctx, "vm", "rm", name); !strings.Contains(stderr, "running") {
		t.Fatalf("rm of a running VM: %s", stderr)
	}
	start = time.Now()
	e.must(ctx, "vm", "stop", "--force", name)
	if got := e.vm(ctx, name); got.State != api.StateStopped {
		t.Fatalf("after stop --force: %s", got.State)
	}
	t.Logf("stop --force: %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	r = e.banger(ctx, "vm", "ping", name)
	if took := time.Since(start); r.code == 0 || strings.TrimSpace(r.stdout) != name+" is stopped" || took > time.Second {
		t.Fatalf("ping of a stopped VM: exit %d after %s: %q", r.code, took, r.stdout)
	}
	e.must(ctx, "vm", "rm", name)
	assertNoLeaks(ctx, t, e)
	step("start, stop --force, rm, nothing left")
}

// TestFirecrackerSimulator runs the conformance suite with `--vmm
// firecracker` against the Firecracker simulator (fcsim's
// firecracker-simulator, which serves Firecracker's API and boots the
// guest under QEMU with TCG), jailed by the jailer simulator (jailersim,
// which does what Firecracker's jailer does and leaves the simulator a
// launcher for QEMU outside the jail): the daemon's Firecracker driver,
// its jailer command line, the chroot with the VM's files linked in, the
// cgroups, its API requests, VMM user, TAP opened by name through the
// jail's /dev/net/tun, hybrid vsock agent channel, stop, re-adoption and
// cleanup (no chroot, no cgroup left), end to end.
func TestFirecrackerSimulator(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, conformanceEnv...)
	step := stepLogger(t)

	// The simulators, in a folder the VMM user can reach; Firecracker's
	// is static, as Firecracker is: it runs in an empty chroot.
	simDir, err := os.MkdirTemp("", "bgr-fcsim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(simDir) })
	os.Chmod(simDir, 0o755)
	sim, jailerSim := filepath.Join(simDir, "firecracker-simulator"), filepath.Join(simDir, "jailer-simulator")
	for bin, pkg := range map[string]string{sim: "fcsim/cmd/firecracker-simulator", jailerSim: "jailersim/cmd/jailer-simulator"} {
		cmd := exec.Command("go", "build", "-o", bin, filepath.Join(e.repo, "internal", "vmm", "firecracker", pkg))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	e.extraEnv = append(e.extraEnv, "BANGER_FIRECRACKER_SIMULATOR="+sim, "BANGER_JAILER_SIMULATOR="+jailerSim)
	// A subnet of its own: the automatic candidates may all be taken on a
	// host where other test runs keep bridges.
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\nsubnet = \"10.77.%d.0/24\"\n", e.bridge, 20+os.Getpid()%200))
	e.devTUN = testhost.DevTUN(t)
	step("build the simulators")

	e.debianImage(ctx)
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	step("image")

	out := e.must(ctx, "vm", "create", "dev", "--vmm", "firecracker", "--cpus", "1", "--memory", "512")
	v := e.vm(ctx, "dev")
	step("vm create --vmm firecracker (to SSH)")
	if v.State != api.StateRunning || v.VMM != "firecracker" || v.Accel != "tcg (firecracker simulator)" || v.PID == 0 || v.TAP == "" {
		t.Fatalf("after create: %+v\n%s", v, out)
	}
	// The VMM is the simulator, jailed: the jailer's copy of it, in the
	// chroot <state>/jailer/firecracker-simulator/<id>/root, running as a
	// VMM user of its own, in cgroups of the VM's shape; it says so.
	status := vmmtest.Status(t, v.PID)
	if uid := strings.Fields(status["Uid"]); len(uid) == 0 || uid[0] == "0" {
		t.Errorf("the simulator runs as uid %v, want a VMM user", status["Uid"])
	}
	chroot := filepath.Join(e.root, "state", "banger", "jailer", "firecracker-simulator", v.ID, "root")
	if exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(v.PID), "exe")); filepath.Base(exe) != "firecracker-simulator" {
		t.Errorf("the VM's VMM is %s, want the simulator", exe)
	}
	vmmRoot := filepath.Join("/proc", strconv.Itoa(v.PID), "root")
	for name, host := range map[string]string{"firecracker-simulator": "", "rootfs": filepath.Join(v.Dir, "disk.ext4"), "api.sock": ""} {
		a, err := os.Stat(filepath.Join(vmmRoot, name))
		if err != nil {
			t.Errorf("the VMM's root has no /%s: it is not jailed: %v", name, err)
			continue
		}
		if b, err := os.Stat(filepath.Join(chroot, name)); err != nil || !os.SameFile(a, b) {
			t.Errorf("the VMM's /%s is not %s/%s (%v)", name, chroot, name, err)
		}
		if c, err := os.Stat(host); host != "" && (err != nil || !os.SameFile(a, c)) {
			t.Errorf("the VMM's /%s is not the VM's disk linked in (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(vmmRoot, "etc")); err == nil {
		t.Errorf("the VMM sees the host's /etc")
	}
	// The cgroups: `ip netns exec`, which runs the daemon in the test's
	// namespace, mounts a sysfs of its own, without the host's cgroup
	// mounts; the jail then has none and says why (the driver's
	// TestJailedLifecycle covers the cgroups, on the host's).
	var cgroups []string
	noted := false
	for _, n := range v.Notes {
		if rest, ok := strings.CutPrefix(n, "jailed: chroot "+chroot+", cgroups "); ok {
			cgroups, noted = strings.Split(rest, ", "), true
		}
		if why, ok := strings.CutPrefix(n, "jailed: chroot "+chroot+", no cgroup limits: "); ok {
			t.Logf("the jail has no cgroups here: %s", why)
			noted = true
		}
	}
	if !noted {
		t.Errorf("no note of the jail's chroot %s and cgroups: %q", chroot, v.Notes)
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); err != nil || !strings.HasSuffix(cg, "/firecracker-simulator/"+v.ID) {
			t.Errorf("cgroup %s: %v", cg, err)
		}
	}
	if show := e.must(ctx, "vm", "show", "dev"); !strings.Contains(show, "NOT Firecracker") || !strings.Contains(show, "NOT the jailer") {
		t.Errorf("vm show does not say the VMM and its jailer are simulators:\n%s", show)
	}
	firecrackerClone(ctx, t, e, step)
	vmConformance(ctx, t, e, "dev")
	if _, err := os.Stat(filepath.Dir(chroot)); err == nil {
		t.Errorf("the jail %s is left behind", filepath.Dir(chroot))
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s is left behind", cg)
		}
		os.Remove(filepath.Dir(cg)) // the jailer's parent, shared by VMs
	}
}

// firecrackerClone warms the image under the Firecracker simulator (a
// full snapshot, PUT /snapshot/create, taken through the jail) and
// creates two clones of it at once (PUT /snapshot/load with each clone's
// TAP and vsock socket), which must pass the clone checks QEMU's do
// (cloneChecks), keep the template's guest CID in their VMM, rows and vm
// show while each has a vsock socket of its own, pause and resume (across
// a daemon restart), cold-boot with their disk kept on vm restart, and
// leave nothing half-made when the daemon is SIGKILLed during a clone; the
// template's files are unchanged by all of it.
func firecrackerClone(ctx context.Context, t *testing.T, e *env, step func(string)) {
	shapeArgs := []string{"--vmm", "firecracker", "--cpus", "1", "--memory", "512", "--disk", "1G"}
	e.must(ctx, append([]string{"image", "warm", "default"}, shapeArgs...)...)
	step("image warm --vmm firecracker")
	im := e.imageShow(ctx, "default")
	if len(im.Templates) != 1 || im.Templates[0].VMM != "firecracker" {
		t.Fatalf("templates after image warm --vmm firecracker: %+v", im.Templates)
	}
	tpl := im.Templates[0]
	t.Logf("firecracker template %s: %d bytes on disk, built in %.1f s", tpl.Key, tpl.SizeBytes, tpl.BuildSeconds)
	files := []string{"ram", "state", "disk.ext4"}
	sums := hashFiles(t, tpl.Dir, files...)
	step("hash the template's files")

	vms := createClones(ctx, t, e, tpl.Key, []string{"fc1", "fc2"}, shapeArgs...)
	step("two vm creates at once from the firecracker template (to SSH)")
	for _, c := range vms {
		if c.VMM != "firecracker" {
			t.Fatalf("clone %s runs under %s", c.Name, c.VMM)
		}
	}
	cloneChecks(ctx, t, e, vms)
	step("identity, clock, ping and file checks of both clones")
	guestCIDChecks(ctx, t, e, vms)
	step("guest CIDs and vsock sockets")

	pauseChecks(ctx, t, e, "fc1")
	step("vm pause / resume of a clone, across a daemon SIGKILL")
	restartChecks(ctx, t, e, "fc1")
	step("vm restart of a clone (cold, disk kept)")
	killDuringCreate(ctx, t, e, "fc3", shapeArgs...)
	step("SIGKILL of bangerd during a clone")

	e.must(ctx, "vm", "rm", "--force", "fc1", "fc2")
	if after := hashFiles(t, tpl.Dir, files...); !slices.Equal(after, sums) {
		t.Errorf("the clones changed the template's files: %v, was %v", after, sums)
	}
	step("vm rm of the clones, the template's files unchanged")
}

// guestCIDChecks: each Firecracker VM of vms has the guest CID its VMM
// reports (GET /vm/config on its API socket, in its jail): a clone keeps
// its template's, vmm.GuestCID; its row (vm ls --json) and vm show say
// so; and each has a vsock socket (its agent socket) of its own, through
// which its agent answers.
func guestCIDChecks(ctx context.Context, t *testing.T, e *env, vms []api.VM) {
	t.Helper()
	sockets := map[string]string{}
	for _, v := range vms {
		var cfg fcapi.FullVMConfiguration
		apiSock := filepath.Join(e.root, "state", "banger", "jailer", "firecracker-simulator", v.ID, "root", "api.sock")
		if err := firecracker.NewClient(apiSock, 10*time.Second).Get(ctx, "/vm/config", &cfg); err != nil {
			t.Errorf("GET /vm/config of %s: %v", v.Name, err)
			continue
		}
		if cfg.Vsock == nil || cfg.Vsock.GuestCID != vmm.GuestCID {
			t.Errorf("%s: its VMM has vsock %+v, want guest CID %d", v.Name, cfg.Vsock, vmm.GuestCID)
			continue
		}
		row := e.vm(ctx, v.Name)
		if row.VsockCID != cfg.Vsock.GuestCID || v.VsockCID != cfg.Vsock.GuestCID {
			t.Errorf("%s: vm show --json says guest CID %d (create said %d), its VMM %d", v.Name, row.VsockCID, v.VsockCID, cfg.Vsock.GuestCID)
		}
		if show := e.must(ctx, "vm", "show", v.Name); !regexp.MustCompile(`(?m)^vsock cid\s+` + strconv.Itoa(int(cfg.Vsock.GuestCID)) + `\s*$`).MatchString(show) {
			t.Errorf("vm show %s does not say vsock cid %d:\n%s", v.Name, cfg.Vsock.GuestCID, show)
		}
		if other, dup := sockets[row.AgentSocket]; dup || row.AgentSocket == "" {
			t.Errorf("%s and %s share the vsock socket %q", v.Name, other, row.AgentSocket)
		}
		sockets[row.AgentSocket] = v.Name
		if fi, err := os.Stat(row.AgentSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: its vsock socket %s: %v", v.Name, row.AgentSocket, err)
		}
		if out := e.must(ctx, "vm", "ping", v.Name); !strings.Contains(out, v.Name+" is alive") {
			t.Errorf("vm ping %s: %s", v.Name, out)
		}
	}
}
