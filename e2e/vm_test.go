package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/testhost"
)

// TestVMLifecycle is the core end-to-end test: a real VM is created, reached
// over SSH, restarted with its disk intact, survives a SIGKILLed daemon, is
// noticed when its VMM dies, and is deleted without leaks.
func TestVMLifecycle(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.extraEnv = append(e.extraEnv, conformanceEnv...)

	// The image build downloads Debian packages, so it runs outside the
	// namespace; then the daemon is stopped and restarted inside it.
	e.debianImage(ctx)
	if out := e.must(ctx, "image", "ls"); !strings.Contains(out, "default") {
		t.Fatalf("image ls does not list the image:\n%s", out)
	}
	checkDoctor(ctx, t, e)
	// OCI builds need no internet: the registry is on the host's loopback.
	var oci ociSources
	t.Run("OCI images build from a registry, a layout and an archive", func(t *testing.T) {
		oci = makeOCISources(t, e.imageShow(ctx, "default").Path)
		buildOCIImages(ctx, t, e, &oci)
		ociBadBuilds(ctx, t, e, oci.layout)
	})
	e.must(ctx, "daemon", "stop")
	e.enterNetns()

	t.Run("bad input leaves nothing behind", func(t *testing.T) { badInput(ctx, t, e) })

	// Created at a terminal, as a user would: the boot's phases show.
	start := time.Now()
	out, code := e.onTerminal(10*time.Minute, "vm", "create", "dev", "--cpus", "1", "--memory", "512")
	t.Logf("vm create (to SSH): %s", time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("vm create: exit %d:\n%s\ndaemon log:\n%s", code, out, e.daemonLogTail())
	}
	checkBootProgress(t, out, "dev")
	v := e.vm(ctx, "dev")
	if v.State != api.StateRunning || v.IP == "" || v.PID == 0 || v.TAP == "" {
		t.Fatalf("after create: %+v", v)
	}
	assertVMMConfined(ctx, t, e, v)

	// vm ls in both forms.
	if out := e.must(ctx, "vm", "ls"); !strings.Contains(out, "dev") || !strings.Contains(out, "running") {
		t.Fatalf("vm ls:\n%s", out)
	}
	assertListJSON(ctx, t, e)
	t.Run("terminal: completion, no terminal queries, unknown commands", func(t *testing.T) { terminalCLI(ctx, t, e) })

	if r := e.banger(ctx, "vm", "ssh", "dev", "--", "true"); r.code != 0 || !strings.Contains(r.stderr, `VM "dev" is still running (up `) || !strings.Contains(r.stderr, "banger vm stop dev") {
		t.Fatalf("no reminder after ssh: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := e.banger(ctx, "vm", "ssh", "--no-remind", "dev", "--", "true"); strings.Contains(r.stderr, "still running") {
		t.Fatalf("--no-remind still reminded: %q", r.stderr)
	}
	t.Run("tui", func(t *testing.T) { tuiWithRunningVM(ctx, t, e) })
	e.must(ctx, "vm", "start", "dev")

	vmConformance(ctx, t, e, "dev")

	t.Run("OCI-built images boot and show both layers", func(t *testing.T) {
		if len(oci.images) == 0 {
			t.Skip("no OCI image was built")
		}
		bootOCIImages(ctx, t, e, &oci)
		assertNoLeaks(ctx, t, e)
	})
	t.Run("a guest that hangs under KVM fails with the console tail and a hint", func(t *testing.T) {
		kvmHang(ctx, t, e, v.Accel)
	})
	t.Run("a VM boots from an installed tree whose bundle came over HTTP", func(t *testing.T) {
		installedTree(ctx, t, e)
		assertNoLeaks(ctx, t, e)
	})
}

// kvmHang forces KVM on a host where the daemon found that KVM cannot run
// guests: vm create must fail with the console tail and the TCG hint within
// the stall timeout, and leave nothing behind.
func kvmHang(ctx context.Context, t *testing.T, e *env, autoAccel string) {
	if autoAccel != "tcg" {
		testhost.SkipHardware(t, "the daemon chose %q: KVM runs guests here, so there is no hang to test", autoAccel)
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		testhost.SkipHardware(t, "no usable /dev/kvm: %v", err)
	} else {
		f.Close()
	}
	e.must(ctx, "daemon", "stop")
	e.extraEnv = []string{"BANGER_ACCEL=kvm", "BANGER_STALL_TIMEOUT=15s"}
	defer func() {
		e.extraEnv = nil
		e.banger(ctx, "daemon", "stop")
	}()
	// The root daemon's VMMs run as users of their own: where /dev/kvm is
	// root's alone (as here), no VMM can use KVM, and forcing it fails at
	// once, naming the device and the fix, before any guest can hang.
	if fi, err := os.Stat("/dev/kvm"); err == nil && fi.Mode().Perm()&0o066 == 0 {
		stderr := e.fails(ctx, "vm", "create", "hang", "--cpus", "1", "--memory", "512")
		for _, want := range []string{"(vmm-user)", "/dev/kvm (mode 0600", "asks for kvm", "chmod 0660 /dev/kvm"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("forced kvm with /dev/kvm closed to the VMM users: error lacks %q:\n%s", want, stderr)
			}
		}
		assertNoLeaks(ctx, t, e)
		return
	}
	// Knowing from its probe that KVM hangs here, preflight refuses at once.
	stderr := e.fails(ctx, "vm", "create", "hang", "--cpus", "1", "--memory", "512")
	if !strings.Contains(stderr, "asks for kvm: VMs will hang at boot") {
		t.Errorf("preflight with forced kvm:\n%s", stderr)
	}
	assertNoLeaks(ctx, t, e)

	// Without the probe's answer, the boot is tried and the stall detector
	// must stop it.
	e.must(ctx, "daemon", "stop")
	cache := filepath.Join(e.root, "state", "banger", "accel-probe.json")
	if err := os.Rename(cache, cache+".saved"); err != nil {
		t.Fatalf("hide the probe cache: %v", err)
	}
	defer os.Rename(cache+".saved", cache)
	start := time.Now()
	stderr = e.fails(ctx, "vm", "create", "hang", "--cpus", "1", "--memory", "512")
	took := time.Since(start)
	// Some nested hosts hang the guest; others make QEMU abort at once
	// ("failed to set MSR"). Either way the error says so and gives the hint.
	if !strings.Contains(stderr, "shows no progress on its console") && !strings.Contains(stderr, "start qemu") {
		t.Errorf("hang error is neither a stall nor a failed QEMU start:\n%s", stderr)
	}
	for _, want := range []string{"BANGER_ACCEL=tcg", "serial console"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("hang error lacks %q:\n%s", want, stderr)
		}
	}
	if took > 90*time.Second {
		t.Errorf("hang detected after %s; the stall timeout is 15s", took)
	}
	assertNoLeaks(ctx, t, e)
}

func assertListJSON(ctx context.Context, t *testing.T, e *env) {
	t.Helper()
	var raw []map[string]any
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "ls", "--json")), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 {
		t.Fatalf("vm ls --json: %d entries", len(raw))
	}
	for _, k := range []string{"name", "id", "state", "ip", "cpus", "memory_mib", "disk_bytes", "image", "vmm", "created_at"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("vm ls --json lacks field %q", k)
		}
	}
}

// badInput checks refusals and that they leave no rows, folders or TAPs.
func badInput(ctx context.Context, t *testing.T, e *env) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "Bad_Name"}, "invalid VM name"},
		{[]string{"vm", "create", "--", "-dev"}, "invalid VM name"},
		{[]string{"vm", "create", "dev-"}, "invalid VM name"},
		{[]string{"vm", "create", ""}, `the VM name "" is empty`},
		{[]string{"vm", "create", "x", "--cpus", "0"}, "--cpus 0: give a positive number"},
		{[]string{"vm", "create", "x", "--memory", "0"}, "--memory 0: give a positive number"},
		{[]string{"vm", "create", "x", "--cpus", "999"}, "--cpus 999 is out of range"},
		{[]string{"vm", "create", "x", "--memory", "99999999"}, "--memory 99999999 MiB is out of range"},
		{[]string{"vm", "create", "x", "--image", "nope"}, `no image named "nope"`},
		{[]string{"vm", "create", "x", "--disk", "1M"}, "smaller than image"},
		{[]string{"vm", "create", "x", "--disk", "lots"}, "invalid size"},
		{[]string{"vm", "create", "x", "--vmm", "bochs"}, `--vmm "bochs" is not available`},
		{[]string{"vm", "start", "ghost"}, `no VM named "ghost"`},
		{[]string{"vm", "ssh", "ghost"}, `no VM named "ghost"`},
	} {
		stderr := e.fails(ctx, tc.args...)
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("banger %s: stderr %q does not contain %q", strings.Join(tc.args, " "), stderr, tc.want)
		}
	}

	// Two concurrent creates of one name: exactly one wins.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.banger(ctx, "vm", "create", "twin", "--no-start").code
		}()
	}
	wg.Wait()
	if (codes[0] == 0) == (codes[1] == 0) {
		t.Fatalf("concurrent creates of one name: exit codes %v, want exactly one success", codes)
	}
	e.must(ctx, "vm", "rm", "twin")

	// A malformed request does not kill the daemon.
	sock := filepath.Join(e.root, "run", "banger", "bangerd.sock")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("{not json\n"))
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := c.Read(buf)
	c.Close()
	if !strings.Contains(string(buf[:n]), "parse error") {
		t.Fatalf("malformed request answered %q", buf[:n])
	}
	e.daemonStatus(ctx) // still answers

	assertNoLeaks(ctx, t, e)
}

// assertVMMConfined: the VMM of a root daemon runs as a uid of its own, not
// root, under a seccomp filter with no_new_privs, and vm show says which.
func assertVMMConfined(ctx context.Context, t *testing.T, e *env, v api.VM) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(v.PID), "status"))
	if err != nil {
		t.Fatalf("status of the vmm: %v", err)
	}
	st := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, val, ok := strings.Cut(l, ":"); ok {
			st[k] = strings.Join(strings.Fields(val), " ")
		}
	}
	uid := strings.Fields(st["Uid"])
	t.Logf("vmm pid %d: Uid %s, Seccomp %s, NoNewPrivs %s, CapEff %s; vm show: vmm user %s", v.PID, st["Uid"], st["Seccomp"], st["NoNewPrivs"], st["CapEff"], v.VMMUser)
	if len(uid) != 4 || slices.Contains(uid, "0") || st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" || st["CapEff"] != "0000000000000000" {
		t.Errorf("the vmm of a root daemon is not confined: Uid %q, Seccomp %q, NoNewPrivs %q, CapEff %q", st["Uid"], st["Seccomp"], st["NoNewPrivs"], st["CapEff"])
	}
	if len(uid) > 0 && !strings.HasPrefix(v.VMMUser, "uid "+uid[0]+" ") {
		t.Errorf("vm show says the vmm runs as %q; it runs as uid %s", v.VMMUser, uid[0])
	}
	if out := e.must(ctx, "vm", "show", v.Name); !strings.Contains(out, "vmm user") {
		t.Errorf("vm show does not say which user the vmm runs as:\n%s", out)
	}
}

// assertNoLeaks checks that no VM row, lease, folder, TAP or VMM process is left.
func assertNoLeaks(ctx context.Context, t *testing.T, e *env) {
	t.Helper()
	if out := strings.TrimSpace(e.must(ctx, "vm", "ls", "--json")); out != "[]" {
		t.Errorf("VMs left: %s", out)
	}
	vmsDir := filepath.Join(e.root, "state", "banger", "vms")
	if ents, _ := os.ReadDir(vmsDir); len(ents) != 0 {
		t.Errorf("VM folders left in %s: %v", vmsDir, ents)
	}
	db, err := store.Open(ctx, filepath.Join(e.root, "state", "banger", "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := store.CountLeases(ctx, db.DB); err != nil || n != 0 {
		t.Errorf("leases left: %d (%v)", n, err)
	}
	if out, _ := e.inNetns("ip", "-o", "link", "show"); strings.Contains(out, "bgr-") {
		t.Errorf("TAP devices left:\n%s", out)
	}
	if pids := processesUsing(vmsDir); len(pids) != 0 {
		t.Errorf("VMM processes left: %v", pids)
	}
}

// checkDoctor: on a host without Firecracker, doctor says so, explains why
// QEMU is used, and finds the guest agent in the freshly built image.
func checkDoctor(ctx context.Context, t *testing.T, e *env) {
	t.Helper()
	r := e.banger(ctx, "doctor", "--json", "--no-probe")
	var rep struct {
		Checks  []struct{ ID, Status, Detail, Fix string }
		Summary struct{ Status string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	byID := map[string]int{}
	for i, c := range rep.Checks {
		byID[c.ID] = i
	}
	for _, id := range []string{"runtime", "runtime-owner", "qemu", "kvm", "vmm-user", "tun", "net-admin", "image-tools", "image-agent", "firecracker"} {
		if _, ok := byID[id]; !ok {
			t.Errorf("doctor --json lacks check %q", id)
		}
	}
	// As root: the bundle is root's alone, and VMMs get users of their own
	// (vmm-user warns where /dev/kvm is closed to them: TCG is used).
	if i, ok := byID["runtime-owner"]; ok && rep.Checks[i].Status != "ok" {
		t.Errorf("runtime-owner: %s: %s", rep.Checks[i].Status, rep.Checks[i].Detail)
	}
	if i, ok := byID["vmm-user"]; ok && (rep.Checks[i].Status == "fail" || !strings.Contains(rep.Checks[i].Detail, "VMMs run as uids")) {
		t.Errorf("vmm-user: %s: %s", rep.Checks[i].Status, rep.Checks[i].Detail)
	}
	if i, ok := byID["image-agent"]; ok && rep.Checks[i].Status != "ok" {
		t.Errorf("image-agent: %s: %s", rep.Checks[i].Status, rep.Checks[i].Detail)
	}
	if i, ok := byID["firecracker"]; ok {
		if _, err := exec.LookPath("firecracker"); err != nil {
			c := rep.Checks[i]
			if c.Status == "ok" || !strings.Contains(c.Detail, "banger uses QEMU") || c.Fix == "" {
				t.Errorf("firecracker check on a host without it: %+v", c)
			}
		}
	}
	if (r.code == 0) != (rep.Summary.Status != "fail") {
		t.Errorf("doctor exit %d with summary %q", r.code, rep.Summary.Status)
	}
}
