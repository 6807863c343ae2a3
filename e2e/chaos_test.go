package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// TestChaos SIGKILLs bangerd at random moments of VM operations (vm create,
// start, stop, restart, rm --force) and image builds (Debian, OCI
// docker-archive), and after each kill checks that the restarted daemon's
// view matches the machine (see chaos.check). The rounds are drawn from a
// seed, printed first: BANGER_CHAOS_SEED=N replays its draws (operations
// and kill delays; the machine's timing is its own). BANGER_CHAOS_ROUNDS=N
// runs N rounds instead of the CI's dozen.
func TestChaos(t *testing.T) {
	requireHost(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BANGER_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("BANGER_CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	rounds := 12
	if v := os.Getenv("BANGER_CHAOS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BANGER_CHAOS_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	t.Logf("chaos seed %d, %d rounds (replay: BANGER_CHAOS_SEED=%d BANGER_CHAOS_ROUNDS=%d)", seed, rounds, seed, rounds)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(10+rounds*3)*time.Minute)
	defer cancel()
	began := time.Now()
	logStep := stepLogger(t)
	e := newEnv(t)
	// A stop of a guest still booting would wait out the whole graceful
	// timeout; a short one keeps the rounds short.
	e.extraEnv = []string{"BANGER_STOP_TIMEOUT=5s"}
	c := &chaos{t: t, ctx: ctx, e: e, drawn: map[string]bool{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	e.debianImage(ctx)
	logStep("the Debian image")

	// The Debian builds download packages: they run first, outside the
	// namespace; one round in six, at least one.
	debianRounds := max(1, rounds/6)
	for range debianRounds {
		c.round(chaosOp{name: "image build (debian)", maxDelay: 25 * time.Second,
			args: []string{"image", "build", "chaos-debian", "--from", "debian:bookworm", "--no-cache", "--quiet"}})
	}
	c.cleanupImage("chaos-debian")
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	logStep(fmt.Sprintf("%d Debian build rounds", debianRounds))

	// One OCI build round always (it needs no network), then the draws.
	if c.n < rounds {
		c.drawn["build"] = true
		c.round(c.ociBuild())
	}
	for c.n < rounds {
		c.round(c.draw())
	}
	c.cleanupImage("chaos-oci")
	for _, v := range c.vms() {
		e.must(ctx, "vm", "rm", "--force", v.Name)
	}
	c.check("end")
	assertNoLeaks(ctx, t, e)
	logStep("the VM and OCI build rounds")
	t.Logf("chaos: %d rounds in %s (seed %d)", c.n, time.Since(began).Round(time.Second), seed)
}

// chaos is the state of one chaos run.
type chaos struct {
	t       *testing.T
	ctx     context.Context
	e       *env
	rng     *rand.Rand
	n       int    // rounds run
	archive string // docker-archive:PATH of the Debian image
	created int    // VMs created (for names)
	// drawn records the kinds of operation drawn so far.
	drawn map[string]bool
}

// chaosOp is one operation bangerd is killed during.
type chaosOp struct {
	name string
	args []string
	// maxDelay bounds the kill's delay: about how long the operation
	// takes here (a kill after it ended hits an idle daemon).
	maxDelay time.Duration
	// prep, when set, runs first, uninterrupted (for example: removes a
	// VM so that few boot at once, or makes the VM a start starts); it
	// returns the last argument, if any.
	prep func() string
}

// The chaos VMs are small: they boot under TCG on a shared host.
const (
	chaosVMCPUs   = "1"
	chaosVMMemory = "256"
)

// draw picks the next operation, from the seed, among those the VMs'
// states allow without a boot first (a boot takes long under TCG): a
// stop or restart needs a running VM (perhaps still booting). Kinds not drawn yet come first. Every draw takes the
// same numbers from the seed, so a seed replays its draws as long as the
// rounds end as they did.
func (c *chaos) draw() chaosOp {
	roll, pick := c.rng.IntN(1<<16), c.rng.IntN(1<<16)
	all, running, stopped := namesByState(c.vms())
	create := func(boot bool) chaosOp {
		c.created++
		args := []string{"vm", "create", fmt.Sprintf("c%d", c.created), "--cpus", chaosVMCPUs, "--memory", chaosVMMemory}
		d := 25 * time.Second
		if !boot {
			args, d = append(args, "--no-start"), 1500*time.Millisecond
		}
		return chaosOp{name: "vm " + strings.Join(args[1:], " "), args: args, maxDelay: d, prep: func() string { c.keepAtMost(1); return "" }}
	}
	on := func(names []string, maxDelay time.Duration, args ...string) chaosOp {
		target := names[pick%len(names)]
		return chaosOp{name: strings.Join(args, " ") + " " + target, args: append(args, target), maxDelay: maxDelay}
	}
	type choice struct {
		kind   string
		weight int
		op     func() chaosOp
	}
	choices := []choice{
		{"create --no-start", 3, func() chaosOp { return create(false) }},
		{"create", 1, func() chaosOp { return create(true) }},
		{"build", 1, c.ociBuild},
	}
	// A start and an rm get a VM cheaply when there is none (a stop
	// --force or a create --no-start); a stop or a restart needs a running
	// VM, which only a boot makes.
	needVM := func(names []string) func() string {
		return func() string {
			if len(names) > 0 {
				return names[pick%len(names)]
			}
			if len(running) > 0 {
				name := running[pick%len(running)]
				c.e.must(c.ctx, "vm", "stop", "--force", name)
				return name
			}
			c.created++
			name := fmt.Sprintf("c%d", c.created)
			c.e.must(c.ctx, "vm", "create", name, "--cpus", chaosVMCPUs, "--memory", chaosVMMemory, "--no-start")
			return name
		}
	}
	choices = append(choices,
		choice{"rm", 2, func() chaosOp {
			return chaosOp{name: "vm rm --force", args: []string{"vm", "rm", "--force"}, maxDelay: time.Second, prep: needVM(all)}
		}},
		choice{"start", 3, func() chaosOp {
			return chaosOp{name: "vm start", args: []string{"vm", "start"}, maxDelay: 25 * time.Second, prep: needVM(stopped)}
		}})
	if len(running) > 0 {
		choices = append(choices,
			choice{"stop", 2, func() chaosOp { return on(running, 8*time.Second, "vm", "stop") }},
			choice{"stop --force", 2, func() chaosOp { return on(running, 2*time.Second, "vm", "stop", "--force") }},
			choice{"restart", 2, func() chaosOp { return on(running, 30*time.Second, "vm", "restart") }})
	}
	// Kinds not drawn yet come first, so a short run covers them all.
	if fresh := slices.DeleteFunc(slices.Clone(choices), func(ch choice) bool { return c.drawn[ch.kind] }); len(fresh) > 0 {
		choices = fresh
	}
	total := 0
	for _, ch := range choices {
		total += ch.weight
	}
	roll %= total
	for _, ch := range choices {
		if roll < ch.weight {
			c.drawn[ch.kind] = true
			return ch.op()
		}
		roll -= ch.weight
	}
	panic("unreachable")
}

// ociBuild is an image build from a docker-archive.
func (c *chaos) ociBuild() chaosOp {
	return chaosOp{name: "image build (docker-archive)", maxDelay: 20 * time.Second,
		prep: func() string { c.cleanupImage("chaos-oci"); return "" },
		args: []string{"image", "build", "chaos-oci", "--from", c.dockerArchive(), "--no-cache", "--quiet"}}
}

// round runs op (after its prep), SIGKILLs the daemon at a random moment
// of it, and checks what the next daemon finds.
func (c *chaos) round(op chaosOp) {
	c.t.Helper()
	c.n++
	// Half the kills fall in the first 1.5 s, where most of an operation's
	// state changes are; the rest anywhere up to maxDelay.
	frac, early := c.rng.Float64(), c.rng.IntN(2) == 0
	delay := time.Duration(frac * float64(op.maxDelay))
	if early {
		delay = time.Duration(frac * float64(min(op.maxDelay, 1500*time.Millisecond)))
	}
	prepStart := time.Now()
	if op.prep != nil {
		if last := op.prep(); last != "" {
			op.args = append(slices.Clone(op.args), last)
			op.name += " " + last
		}
	}
	if took := time.Since(prepStart); took > time.Second {
		c.t.Logf("round %d: getting ready for %s: %s", c.n, op.name, took.Round(100*time.Millisecond))
	}
	argv := c.e.cliArgv(op.args...)
	cmd := exec.CommandContext(c.ctx, argv[0], argv[1:]...)
	cmd.Env = c.e.environ()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// The daemon must run before the clock starts.
	c.e.must(c.ctx, "vm", "ls")
	daemon := c.e.daemonStatus(c.ctx).PID
	start := time.Now()
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("round %d: start %s: %v", c.n, op.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var finished error
	ended := false
	select {
	case finished = <-done:
		ended = true
	case <-time.After(delay):
	}
	tree := descendantsOf(daemon)
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		c.t.Fatalf("round %d: kill bangerd %d: %v", c.n, daemon, err)
	}
	killedAt := time.Since(start)
	waitFor(c.t, 10*time.Second, "the killed bangerd to go", func() bool { return processGone(daemon) })
	if !ended {
		select {
		case finished = <-done:
		case <-time.After(2 * time.Minute):
			c.t.Fatalf("round %d: %s did not end within 2 minutes of the daemon's death", c.n, op.name)
		}
	}
	how := fmt.Sprintf("killed %s in (drawn delay %s); the CLI: %s", killedAt.Round(10*time.Millisecond),
		delay.Round(10*time.Millisecond), lastLine(exitOf(finished)+": "+out.String()))
	if ended {
		how = fmt.Sprintf("it ended first (%v) after %s; the idle daemon killed", exitOf(finished), killedAt.Round(10*time.Millisecond))
	}
	c.t.Logf("round %d: %s: %s; the daemon had %d processes below it", c.n, op.name, how, len(tree))
	logFrom := fileLen(c.e.daemonLogPath())
	c.check(fmt.Sprintf("round %d (%s)", c.n, op.name), tree...)
	if found := recoveryNotes(c.e.daemonLogPath(), logFrom); len(found) > 0 {
		c.t.Logf("round %d: the next daemon's start: %s", c.n, strings.Join(found, "; "))
	}
}

// daemonProcess says whether the daemon of the env's pid file runs.
func (e *env) daemonProcess() string {
	b, err := os.ReadFile(filepath.Join(e.root, "run", "banger", "bangerd.pid"))
	if err != nil {
		return "no pid file: " + err.Error()
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !processLive(pid) {
		return fmt.Sprintf("the pid file names %d, which does not run", pid)
	}
	return fmt.Sprintf("the pid file names %d, which runs: %s", pid, cmdline(pid))
}

// daemonLogPath is the path of the env's daemon log.
func (e *env) daemonLogPath() string { return filepath.Join(e.root, "state", "banger", "bangerd.log") }

// fileLen is the size of the file at p (0 when missing).
func fileLen(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// recoveryNotes returns the messages of the warnings and errors the daemon
// logged past offset from (what a start found left by the killed daemon).
func recoveryNotes(log string, from int64) []string {
	b, _ := os.ReadFile(log)
	if int64(len(b)) < from {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b[from:]), "\n") {
		if !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=ERROR") {
			continue
		}
		if m := logMsgRE.FindStringSubmatch(l); m != nil && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

var logMsgRE = regexp.MustCompile(`msg="([^"]*)"`)

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// exitOf describes how a CLI run ended.
func exitOf(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// vms is `vm ls --json`.
func (c *chaos) vms() []api.VM {
	c.t.Helper()
	var vms []api.VM
	if err := json.Unmarshal([]byte(c.e.must(c.ctx, "vm", "ls", "--json")), &vms); err != nil {
		c.t.Fatal(err)
	}
	return vms
}

// keepAtMost removes VMs (forcibly, stopped ones first) until at most n
// are left, so the rounds boot few guests at once on a small host.
func (c *chaos) keepAtMost(n int) {
	vms := c.vms()
	slices.SortStableFunc(vms, func(a, b api.VM) int {
		return strings.Compare(b.State, a.State) // "stopped" before "running"
	})
	for len(vms) > n {
		c.e.must(c.ctx, "vm", "rm", "--force", vms[0].Name)
		vms = vms[1:]
	}
}

// cleanupImage removes image name if a round left it.
func (c *chaos) cleanupImage(name string) {
	if c.e.banger(c.ctx, "image", "show", name).code == 0 {
		c.e.must(c.ctx, "image", "rm", name)
	}
}

// dockerArchive writes the Debian image as a docker-archive (one layer),
// the first time it is called, and returns its build source.
func (c *chaos) dockerArchive() string {
	if c.archive != "" {
		return c.archive
	}
	start := time.Now()
	defer func() {
		c.t.Logf("a docker-archive of the Debian image: %s", time.Since(start).Round(100*time.Millisecond))
	}()
	layer, _ := debianLayer(c.t, c.e.imageShow(c.ctx, "default").Path, nil)
	p := filepath.Join(c.t.TempDir(), "debian.tar")
	if err := tarball.WriteToFile(p, name.MustParseReference("banger/chaos:v1"), withPlatform(c.t, appendLayers(c.t, layer), "amd64")); err != nil {
		c.t.Fatal(err)
	}
	c.archive = "docker-archive:" + p
	return c.archive
}

// check starts a daemon (the first CLI call does) and checks that its view
// matches the machine:
//   - no VM is creating, starting or stopping (no operation runs);
//   - every running VM's VMM is alive with the start time the daemon
//     recorded, and its TAP exists; a stopped VM has neither;
//   - no TAP, build veth or nftables guard (bridge set element, netdev
//     chain) exists but a running VM's;
//   - every process in the test's namespace is the daemon or a running
//     VM's VMM, and of the processes below the killed daemon (tree) only
//     running VMs' VMMs live on;
//   - no build sandbox, and no process holding a file of the daemon's
//     folders, is left but the VMMs;
//   - the VM folders are exactly the VM rows' and the image folders the
//     image rows'; the leases are exactly the VMs' addresses, and no build
//     lease is left.
//
// A guest the killed daemon asked to power off may still be doing so: when
// a VMM dies during the check, the check is made again (up to 10 times).
func (c *chaos) check(when string, tree ...procInfo) {
	c.t.Helper()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		vms, vmms, problems := c.checkOnce(tree)
		settled := true
		for p := range vmms {
			settled = settled && proc.Alive(p.pid, p.start)
		}
		if len(problems) == 0 {
			summary := "none"
			for i, v := range vms {
				if i == 0 {
					summary = ""
				} else {
					summary += ", "
				}
				summary += v.Name + " " + v.State
			}
			c.t.Logf("%s: consistent (VMs: %s; %d VMMs; %d processes of the killed daemon checked; %d checks) in %s", when,
				summary, len(vmms), len(tree), attempt, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if settled || attempt == 10 {
			for _, p := range problems {
				c.t.Errorf("%s: %s", when, p)
			}
			c.t.Fatalf("%s: the daemon's view does not match the machine (seed above); daemon log:\n%s", when, c.e.daemonLogTail())
		}
		time.Sleep(time.Second)
	}
}

// checkOnce makes check's checks once; it returns the VMs listed, the
// running VMs' VMMs, and what does not match.
func (c *chaos) checkOnce(tree []procInfo) ([]api.VM, map[procID]string, []string) {
	c.t.Helper()
	t, e, ctx := c.t, c.e, c.ctx
	// The first call starts the daemon: its recovery is done when it
	// answers.
	if r := e.banger(ctx, "vm", "ls", "--json"); r.code != 0 {
		time.Sleep(time.Second) // for the daemon to log why it went
		t.Fatalf("the daemon's first answer after the kill: banger vm ls: exit %d: %s\n%s\ndaemon log:\n%s",
			r.code, r.stderr, e.daemonProcess(), e.daemonLogTail())
	}
	vms := c.vms()
	daemon := e.daemonStatus(ctx).PID
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	db, err := store.Open(ctx, filepath.Join(e.root, "state", "banger", "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := store.ListVMs(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(vms) {
		fail("%d VM rows, vm ls lists %d", len(rows), len(vms))
	}
	state := map[string]string{}
	for _, v := range vms {
		state[v.ID] = v.State
	}
	vmms := map[procID]string{} // the running VMs' VMMs
	taps := map[string]bool{}   // the running VMs' TAPs
	ids := map[string]bool{}
	for _, r := range rows {
		ids[r.ID] = true
		if r.DesiredState == store.DesiredCreating {
			fail("VM %s is stuck creating", r.Name)
		}
		switch s := state[r.ID]; s {
		case api.StateRunning, api.StateStopped:
		default:
			fail("VM %s is %q with no operation running", r.Name, s)
		}
		tap := network.TAPName(r.ID)
		if r.DriverState == "" {
			if state[r.ID] == api.StateRunning {
				fail("VM %s is listed running without a VMM recorded", r.Name)
			}
			continue
		}
		var st vmm.State
		if err := json.Unmarshal([]byte(r.DriverState), &st); err != nil {
			fail("VM %s: driver state: %v", r.Name, err)
			continue
		}
		if !proc.Alive(st.PID, st.StartTime) {
			fail("VM %s is recorded running, but its VMM (pid %d, start %d) is not", r.Name, st.PID, st.StartTime)
		}
		if state[r.ID] != api.StateRunning {
			fail("VM %s has a live VMM recorded but is listed %s", r.Name, state[r.ID])
		}
		vmms[procID{st.PID, st.StartTime}] = r.Name
		taps[tap] = true
	}

	// Processes: what the killed daemon left, what runs in the namespace,
	// what holds the daemon's files.
	for _, p := range tree {
		if proc.Alive(p.pid, p.start) && vmms[p.procID] == "" {
			fail("process %d (%s) of the killed daemon outlived it: %s", p.pid, p.comm, cmdline(p.pid))
		}
	}
	if e.netns != "" {
		out, _ := exec.Command("ip", "netns", "pids", e.netns).Output()
		for _, f := range strings.Fields(string(out)) {
			pid, _ := strconv.Atoi(f)
			st, err := proc.StartTime(pid)
			if err != nil || pid == daemon || !processLive(pid) || vmms[procID{pid, st}] != "" {
				continue
			}
			fail("process %d in the namespace is neither the daemon nor a running VM's VMM: %s", pid, cmdline(pid))
		}
	}
	if pids := e.sandboxProcesses(); len(pids) > 0 {
		fail("build sandbox processes left: %v", pids)
	}
	for _, dir := range []string{filepath.Join(e.root, "state", "banger", "vms"), filepath.Join(e.root, "data", "banger", "images")} {
		for _, pid := range processesUsing(dir) {
			st, err := proc.StartTime(pid)
			if err == nil && processLive(pid) && vmms[procID{pid, st}] == "" && pid != daemon {
				fail("process %d holds a file below %s: %s", pid, dir, cmdline(pid))
			}
		}
	}

	// Network: links, and the guards in nftables.
	if e.netns != "" {
		out, err := e.inNetns("ip", "-o", "link", "show")
		if err != nil {
			t.Fatalf("ip link: %v: %s", err, out)
		}
		seen := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			link, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			seen[link] = true
			if link != "lo" && link != e.bridge && !taps[link] {
				fail("network device %s belongs to no running VM", link)
			}
		}
		for tap := range taps {
			if !seen[tap] {
				fail("the TAP %s of a running VM is missing", tap)
			}
		}
		for _, g := range guardedPorts(e) {
			if !taps[g] {
				fail("nftables guards %s, which is no running VM's TAP", g)
			}
		}
	}

	// Folders, rows and leases.
	if ents, err := os.ReadDir(filepath.Join(e.root, "state", "banger", "vms")); err == nil {
		for _, ent := range ents {
			if !ids[ent.Name()] {
				fail("VM folder %s has no VM", ent.Name())
			}
			delete(ids, ent.Name())
		}
	}
	for id := range ids {
		fail("VM %s has no folder", id)
	}
	for _, dir := range strayImageFolders(ctx, t, e) {
		fail("image folder %s has no image", dir)
	}
	images, err := store.ListImages(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range images {
		if _, err := os.Stat(im.Path); err != nil && im.Name != "" {
			fail("image %s has no file: %v", im.Name, err)
		}
	}
	leases := map[string]string{}
	lr, err := db.DB.QueryContext(ctx, "SELECT ip, vm_id FROM leases")
	if err != nil {
		t.Fatal(err)
	}
	for lr.Next() {
		var ip, id string
		lr.Scan(&ip, &id)
		leases[id] = ip
	}
	lr.Close()
	for _, r := range rows {
		if leases[r.ID] != r.IP {
			fail("VM %s has address %s but lease %q", r.Name, r.IP, leases[r.ID])
		}
		delete(leases, r.ID)
	}
	for id, ip := range leases {
		fail("lease of %s held by %s, which is no VM", ip, id)
	}
	var builds int
	db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM build_leases").Scan(&builds)
	if builds != 0 {
		fail("%d build leases left with no build running", builds)
	}
	return vms, vmms, problems
}

// guardedPorts lists the devices banger's nftables tables in the test
// namespace guard: the bridge table's ports set and the netdev table's
// per-port chains.
func guardedPorts(e *env) []string {
	var out []string
	table := network.TableName(e.bridge)
	if s, err := e.inNetns("nft", "list", "set", "bridge", table, "ports"); err == nil {
		if _, elems, ok := strings.Cut(s, "elements = {"); ok {
			elems, _, _ = strings.Cut(elems, "}")
			for _, f := range strings.Split(elems, ",") {
				if f = strings.Trim(strings.TrimSpace(f), `"`); f != "" {
					out = append(out, f)
				}
			}
		}
	}
	if s, err := e.inNetns("nft", "list", "table", "netdev", table); err == nil {
		for _, m := range portChainRE.FindAllStringSubmatch(s, -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	return out
}

var portChainRE = regexp.MustCompile(`chain port-(\S+) \{`)

// procID is a process: pid and start time (a pid may be reused).
type procID struct {
	pid   int
	start uint64
}

// procInfo is a process and its name.
type procInfo struct {
	procID
	comm string
}

// descendantsOf lists the live processes below pid.
func descendantsOf(pid int) []procInfo {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if f := strings.Fields(s[i+1:]); i > 0 && len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []procInfo
	var walk func(int)
	walk = func(p int) {
		for c, pp := range parent {
			if pp == p {
				if st, err := proc.StartTime(c); err == nil {
					comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c), "comm"))
					out = append(out, procInfo{procID{c, st}, strings.TrimSpace(string(comm))})
				}
				walk(c)
			}
		}
	}
	walk(pid)
	return out
}

// processLive reports whether pid exists and is not a zombie.
func processLive(pid int) bool {
	st, err := proc.StartTime(pid)
	return err == nil && proc.Alive(pid, st)
}

// processGone reports whether pid has ended with all its threads. A
// killed process's main thread may show as a zombie while its other
// threads still exit, holding its descriptors (bangerd's listening
// socket, where a client then connects and is reset).
func processGone(pid int) bool {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return true
	}
	return !processLive(pid) && len(tasks) <= 1
}

// cmdline is pid's command line, for messages.
func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}
