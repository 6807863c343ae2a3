package sandbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/testhost"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	switch os.Getenv("SANDBOX_TEST_HELPER") {
	case "sandbox":
		deathHelper()
		return
	case "guard":
		guardHelper()
		return
	}
	os.Exit(m.Run())
}

// probe is what the test job finds inside a sandbox.
type probe struct {
	UIDMap, GIDMap string
	Status         string // /proc/self/status
	PID            int
	Hostname       string
	Ifaces         []string
	Routes         int
	DialErr        string
	NetNS          string
	Root           []string
	Public         string
	SecretErr      string
	WriteErr       string
	Tree           treeProbe
	Program        string
}

// treeProbe is what a tree run (with System) finds.
type treeProbe struct {
	PID          int
	Root         []string
	Dev          []string
	DevPts       []string
	Status       string
	Input        string
	InputWrite   string
	Ptmx         string
	ProcPIDs     []string
	HostFile     string
	ParentStatus string
}

func init() {
	sandbox.RegisterJob("test.probe", func(sb *sandbox.Sandbox, arg json.RawMessage) (any, error) {
		var p probe
		b, _ := os.ReadFile("/proc/self/uid_map")
		p.UIDMap = strings.Join(strings.Fields(string(b)), " ")
		b, _ = os.ReadFile("/proc/self/gid_map")
		p.GIDMap = strings.Join(strings.Fields(string(b)), " ")
		b, _ = os.ReadFile("/proc/self/status")
		p.Status = string(b)
		p.PID = os.Getpid()
		p.Hostname, _ = os.Hostname()
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			p.Ifaces = append(p.Ifaces, i.Name)
		}
		b, _ = os.ReadFile("/proc/net/route")
		p.Routes = strings.Count(string(b), "\n") - 1
		// No route: nothing is sent.
		if c, err := net.Dial("udp", "192.0.2.1:9"); err != nil {
			p.DialErr = err.Error()
		} else {
			c.Close()
		}
		p.NetNS, _ = os.Readlink("/proc/self/ns/net")
		ents, _ := os.ReadDir("/")
		for _, e := range ents {
			p.Root = append(p.Root, e.Name())
		}
		b, _ = os.ReadFile("/inputs/d/public")
		p.Public = string(b)
		if _, err := os.ReadFile("/inputs/d/secret"); err != nil {
			p.SecretErr = err.Error()
		}
		if err := os.WriteFile("/inputs/d/new", []byte("x"), 0o644); err != nil {
			p.WriteErr = err.Error()
		}
		if err := sb.Event("probed"); err != nil {
			return nil, err
		}
		res, err := sb.InTree(context.Background(), sandbox.TreeSpec{Root: "/tree", System: true, Func: "test.tree",
			Inputs: []sandbox.Input{{Name: "d", Source: "/inputs/d"}}})
		if err != nil {
			return nil, fmt.Errorf("tree run: %w", err)
		}
		if err := json.Unmarshal(res, &p.Tree); err != nil {
			return nil, err
		}
		if _, err := os.Stat("/tree/bin/busybox"); err == nil {
			var out strings.Builder
			_, err := sb.InTree(context.Background(), sandbox.TreeSpec{Root: "/tree", System: true, Stdout: &out,
				Argv: []string{"/bin/busybox", "sh", "-c", "echo pid=$$; grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status; ls /dev; exit 0"},
				Env:  []string{"PATH=/bin"}})
			if err != nil {
				return nil, fmt.Errorf("program run: %w", err)
			}
			p.Program = out.String()
		}
		return p, nil
	})
	sandbox.RegisterTreeFunc("test.tree", func(arg json.RawMessage, _ io.Reader, _ io.Writer) (any, error) {
		var p treeProbe
		p.PID = os.Getpid()
		for dir, dst := range map[string]*[]string{"/": &p.Root, "/dev": &p.Dev, "/dev/pts": &p.DevPts, "/proc": &p.ProcPIDs} {
			ents, err := os.ReadDir(dir)
			if err != nil {
				return nil, err
			}
			for _, e := range ents {
				if dir == "/proc" {
					if _, err := strconv.Atoi(e.Name()); err != nil {
						continue
					}
				}
				*dst = append(*dst, e.Name())
			}
		}
		b, _ := os.ReadFile("/proc/self/status")
		p.Status = string(b)
		b, _ = os.ReadFile("/run/banger/d/public")
		p.Input = string(b)
		if err := os.WriteFile("/run/banger/d/public", []byte("changed"), 0o644); err != nil {
			p.InputWrite = err.Error()
		}
		if f, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0); err != nil {
			p.Ptmx = err.Error()
		} else {
			f.Close()
			p.Ptmx = "ok"
		}
		// The tree's own file, not the host's.
		b, _ = os.ReadFile("/etc/hostname")
		p.HostFile = string(b)
		return p, nil
	})
	sandbox.RegisterJob("test.fail", func(*sandbox.Sandbox, json.RawMessage) (any, error) {
		return nil, errors.New("the job says no")
	})
	sandbox.RegisterJob("test.sleep", func(sb *sandbox.Sandbox, _ json.RawMessage) (any, error) {
		_, err := sb.InTree(context.Background(), sandbox.TreeSpec{Root: "/tree", Func: "test.block"})
		return nil, err
	})
	sandbox.RegisterTreeFunc("test.block", func(json.RawMessage, io.Reader, io.Writer) (any, error) {
		time.Sleep(time.Hour)
		return nil, nil
	})
}

// newTree makes a small image tree (given to the sandbox) and a folder
// with a public and a root-only file.
func newTree(t *testing.T, ids subid.IDs) (tree, inputs string) {
	t.Helper()
	base := t.TempDir()
	t.Cleanup(func() { sandbox.RemoveAll(context.Background(), ids, base) })
	os.Chmod(base, 0o755)
	tree = filepath.Join(base, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("the image's\n"), 0o644)
	// A symlink where /dev should be: replaced, never followed.
	os.Symlink("/etc", filepath.Join(tree, "dev"))
	if bb, err := exec.LookPath("busybox"); err == nil {
		os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
		if out, err := exec.Command("cp", bb, filepath.Join(tree, "bin/busybox")).CombinedOutput(); err != nil {
			t.Fatalf("cp busybox: %v %s", err, out)
		}
	}
	inputs = filepath.Join(base, "inputs")
	os.Mkdir(inputs, 0o755)
	os.WriteFile(filepath.Join(inputs, "public"), []byte("public\n"), 0o644)
	os.WriteFile(filepath.Join(inputs, "secret"), []byte("secret\n"), 0o600)
	return tree, inputs
}

func TestSandbox(t *testing.T) {
	ids := testhost.SubIDs(t)
	tree, inputs := newTree(t, ids)
	var hostMap, hostGMap string
	var events []string
	var log strings.Builder
	res, err := sandbox.Run(context.Background(), sandbox.Spec{
		IDs: ids, Job: "test.probe", Log: &log,
		Binds: []sandbox.Bind{{Source: tree, At: "/tree", Writable: true, Give: true}, {Source: inputs, At: "/inputs/d"}},
		Started: func(pid int) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
			hostMap = strings.Join(strings.Fields(string(b)), " ")
			b, _ = os.ReadFile(fmt.Sprintf("/proc/%d/gid_map", pid))
			hostGMap = strings.Join(strings.Fields(string(b)), " ")
		},
		OnEvent: func(e json.RawMessage) { events = append(events, string(e)) },
	})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	var p probe
	if err := json.Unmarshal(res, &p); err != nil {
		t.Fatal(err)
	}

	// Ids: the subordinate range, never the daemon's own.
	if want := fmt.Sprintf("0 %d %d", ids.UIDs.Start, subid.SandboxSize); hostMap != want {
		t.Errorf("uid_map seen from the host = %q, want %q", hostMap, want)
	}
	if want := fmt.Sprintf("0 %d %d", ids.GIDs.Start, subid.SandboxSize); hostGMap != want {
		t.Errorf("gid_map seen from the host = %q, want %q", hostGMap, want)
	}
	if !strings.HasPrefix(p.UIDMap, "0 ") || !strings.HasSuffix(p.UIDMap, fmt.Sprintf(" %d", subid.SandboxSize)) {
		t.Errorf("uid_map inside = %q", p.UIDMap)
	}
	if p.PID != 1 || p.Hostname != sandbox.Hostname {
		t.Errorf("pid %d hostname %q, want 1 and %q", p.PID, p.Hostname, sandbox.Hostname)
	}
	if !strings.Contains(p.Status, "NoNewPrivs:\t1") {
		t.Errorf("NoNewPrivs not set:\n%s", p.Status)
	}
	// Host files: what others may read, not what only the host's root
	// (or the daemon's user) may, and nothing written.
	if p.Public != "public\n" {
		t.Errorf("public input = %q", p.Public)
	}
	if !strings.Contains(p.SecretErr, "permission denied") {
		t.Errorf("reading a root-only host file: %q, want permission denied", p.SecretErr)
	}
	if p.WriteErr == "" {
		t.Error("the sandbox wrote into a read-only input")
	}
	if _, err := os.Stat(filepath.Join(inputs, "new")); err == nil {
		t.Error("a file appeared in the input folder")
	}
	// The root: the sandbox's own, with the host's programs, no host /home,
	// /root, /var or /etc beyond what tools read.
	for _, want := range []string{"dev", "etc", "inputs", "proc", "tmp", "tree", "usr"} {
		if !slices.Contains(p.Root, want) {
			t.Errorf("sandbox root %v lacks %s", p.Root, want)
		}
	}
	for _, no := range []string{"home", "root", "var", "run", "boot"} {
		if slices.Contains(p.Root, no) {
			t.Errorf("sandbox root %v has the host's /%s", p.Root, no)
		}
	}
	// Network: its own namespace, loopback only, no route out.
	hostNS, _ := os.Readlink("/proc/self/ns/net")
	if p.NetNS == "" || p.NetNS == hostNS {
		t.Errorf("network namespace %q, host's %q", p.NetNS, hostNS)
	}
	if !slices.Equal(p.Ifaces, []string{"lo"}) || p.Routes != 0 {
		t.Errorf("interfaces %v, %d routes; want lo alone and no route", p.Ifaces, p.Routes)
	}
	if !strings.Contains(p.DialErr, "network is unreachable") {
		t.Errorf("dial out: %q, want network is unreachable", p.DialErr)
	}
	if len(events) != 1 || events[0] != `"probed"` {
		t.Errorf("events = %q", events)
	}

	// The tree run: PID 1 of its own namespace, a /dev of exactly the
	// allowed nodes, its own /proc, inputs read-only, the tree's own files.
	tr := p.Tree
	if tr.PID != 1 || !slices.Equal(tr.ProcPIDs, []string{"1"}) {
		t.Errorf("tree run: pid %d, /proc lists %v; want 1 alone", tr.PID, tr.ProcPIDs)
	}
	wantDev := []string{"fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
	if !slices.Equal(tr.Dev, wantDev) {
		t.Errorf("/dev = %v, want %v", tr.Dev, wantDev)
	}
	if !slices.Equal(tr.DevPts, []string{"ptmx"}) || tr.Ptmx != "ok" {
		t.Errorf("/dev/pts = %v (want its own instance: ptmx alone), opening /dev/ptmx: %s", tr.DevPts, tr.Ptmx)
	}
	if !strings.Contains(tr.Status, "NoNewPrivs:\t1") {
		t.Errorf("tree run: NoNewPrivs not set:\n%s", tr.Status)
	}
	if tr.Input != "public\n" || tr.InputWrite == "" {
		t.Errorf("tree input: %q, write: %q (want the content, and a refusal)", tr.Input, tr.InputWrite)
	}
	if tr.HostFile != "the image's\n" {
		t.Errorf("/etc/hostname in the tree = %q", tr.HostFile)
	}
	if fi, err := os.Lstat(filepath.Join(tree, "dev")); err != nil || !fi.IsDir() {
		t.Errorf("the tree's dev symlink was not replaced by a folder: %v %v", fi, err)
	}
	if b, _ := os.ReadFile("/etc/hostname"); strings.Contains(string(b), "the image") {
		t.Error("the host's /etc/hostname was written")
	}
	if p.Program == "" {
		testhost.Skip(t, "no busybox on the host to run as the tree's program (apt-get install busybox-static)")
	}
	// Its own PID namespace (pid 1 is the stage; its threads take a few).
	var pid int
	if _, err := fmt.Sscanf(p.Program, "pid=%d", &pid); err != nil || pid < 2 || pid > 100 {
		t.Errorf("program pid %d (%v), want a small one of its own namespace:\n%s", pid, err, p.Program)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "CapBnd:\t00000000a80425fb"} {
		if !strings.Contains(p.Program, want) {
			t.Errorf("program output lacks %q:\n%s", want, p.Program)
		}
	}
}

func TestSandboxJobError(t *testing.T) {
	ids := testhost.SubIDs(t)
	_, err := sandbox.Run(context.Background(), sandbox.Spec{IDs: ids, Job: "test.fail"})
	if err == nil || err.Error() != "the job says no" {
		t.Fatalf("err = %v, want the job's error", err)
	}
	if _, err := sandbox.Run(context.Background(), sandbox.Spec{IDs: ids, Job: "no.such.job"}); !errors.Is(err, sandbox.ErrSetup) && (err == nil || !strings.Contains(err.Error(), "no job")) {
		t.Fatalf("unknown job: err = %v", err)
	}
}

// TestSandboxDiesWithParent SIGKILLs a process running a sandbox (as the
// daemon would be): every process of the sandbox must go with it.
func TestSandboxDiesWithParent(t *testing.T) {
	testhost.SubIDs(t)
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "SANDBOX_TEST_HELPER=sandbox", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("the helper printed nothing")
	}
	var pid int
	fmt.Sscanf(sc.Text(), "init %d", &pid)
	var family []int
	deadline := time.Now().Add(30 * time.Second)
	for {
		family = sandbox.Descendants(cmd.Process.Pid)
		if len(family) >= 3 || time.Now().After(deadline) || !running(cmd.Process.Pid) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(family) < 3 || !slices.Contains(family, pid) {
		t.Fatalf("want setup, init and tree stages under the helper, got %v (init %d)", family, pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, family, "%v outlived their parent")
}

// deathHelper runs a sandbox that blocks, printing its init's pid.
func deathHelper() {
	ids, err := subid.Lookup(subid.System, os.Getenv("USER"), os.Getuid())
	if err != nil {
		if u, uerr := user.Current(); uerr == nil {
			ids, err = subid.Lookup(subid.System, u.Username, os.Getuid())
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tree, _ := os.MkdirTemp("", "tree")
	defer sandbox.RemoveAll(context.Background(), ids, tree)
	_, err = sandbox.Run(context.Background(), sandbox.Spec{IDs: ids, Job: "test.sleep",
		Binds: []sandbox.Bind{{Source: tree, At: "/tree", Give: true}},
		Log:   os.Stderr, Started: func(pid int) { fmt.Printf("init %d\n", pid) }})
	fmt.Fprintln(os.Stderr, "helper: sandbox ended:", err)
	os.Exit(1)
}

// waitGone fails t (format names the live pids) unless every one of pids
// is gone within 10 s.
func waitGone(t *testing.T, pids []int, format string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []int
		for _, p := range pids {
			if running(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf(format, alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running: pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
}

// TestSandboxRootless runs the tests above again as an ordinary user with
// subordinate ids (a per-user daemon's sandboxes).
func TestSandboxRootless(t *testing.T) {
	testhost.RunAsRootless(t, "TestSandbox", "TestSandboxJobError", "TestSandboxDiesWithParent",
		"TestGuard", "TestGuardDiesWithParent", "TestKillOwned")
}

func TestGuard(t *testing.T) {
	var out strings.Builder
	err := sandbox.Guard(context.Background(), &exec.Cmd{Path: "/bin/sh", Args: []string{"sh", "-c", "echo hello; exit 3"}, Stdout: &out})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || out.String() != "hello\n" {
		t.Fatalf("err %v, output %q; want exit status 3 and hello", err, out.String())
	}
	// Cancelled: the command and what it started go at once.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// sleep takes a fraction: one no other process uses.
	marker := fmt.Sprintf("1000.%d", os.Getpid())
	start := time.Now()
	err = sandbox.Guard(ctx, exec.Command("/bin/sh", "-c", "sleep $0 & setsid sleep $0 & sleep $0", marker))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled guard: %v after %s", err, time.Since(start))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(matching(marker)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes %v outlived the cancelled guard", matching(marker))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGuardDiesWithParent SIGKILLs a process running a guarded command
// tree (as the daemon runs mmdebstrap): the whole tree must go with it.
func TestGuardDiesWithParent(t *testing.T) {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "SANDBOX_TEST_HELPER=guard")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var family []int
	deadline := time.Now().Add(30 * time.Second)
	for {
		// guard, sh, three sleeps
		family = sandbox.Descendants(cmd.Process.Pid)
		if len(family) >= 5 || time.Now().After(deadline) || !running(cmd.Process.Pid) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(family) < 5 {
		t.Fatalf("want the guard, sh and three sleeps under the helper, got %v", family)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, family, "%v outlived their parent")
}

func guardHelper() {
	err := sandbox.Guard(context.Background(), exec.Command("/bin/sh", "-c", "sleep 1000 & setsid sleep 1000 & sleep 1000"))
	fmt.Fprintln(os.Stderr, "helper: guard ended:", err)
	os.Exit(1)
}

// TestKillOwned: a daemon finds and kills what an earlier one's sandboxes
// left, and nothing of another owner's.
func TestKillOwned(t *testing.T) {
	ids := testhost.SubIDs(t)
	mine, other := fmt.Sprintf("test-mine-%d", os.Getpid()), fmt.Sprintf("test-other-%d", os.Getpid())
	start := func(owner string) chan error {
		tree, _ := newTree(t, ids)
		if err := sandbox.SetOwner(owner); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		started := make(chan bool)
		go func() {
			_, err := sandbox.Run(context.Background(), sandbox.Spec{IDs: ids, Job: "test.sleep",
				Binds: []sandbox.Bind{{Source: tree, At: "/tree", Give: true}}, Started: func(int) { close(started) }})
			done <- err
		}()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("sandbox of %s ended: %v", owner, err)
		}
		return done
	}
	mineDone := start(mine)
	otherDone := start(other)
	defer sandbox.KillOwned(other, 10*time.Second)
	if n, err := sandbox.KillOwned(mine, 10*time.Second); err != nil || n < 2 {
		t.Fatalf("KillOwned: %d processes, %v", n, err)
	}
	select {
	case err := <-mineDone:
		if err == nil {
			t.Error("the killed sandbox reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the killed sandbox's Run did not return")
	}
	if left := sandbox.OwnedBy(mine); len(left) > 0 {
		t.Errorf("processes %v of the killed owner remain", left)
	}
	if len(sandbox.OwnedBy(other)) == 0 {
		t.Error("another owner's sandbox was killed too")
	}
	select {
	case err := <-otherDone:
		t.Fatalf("the other sandbox ended: %v", err)
	default:
	}
	if _, err := sandbox.KillOwned("", time.Second); err == nil {
		t.Error("KillOwned without a token was accepted")
	}
}

// matching lists live processes whose command line contains s.
func matching(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), s) && running(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func init() {
	sandbox.RegisterJob("test.dial", func(_ *sandbox.Sandbox, arg json.RawMessage) (any, error) {
		var addr string
		json.Unmarshal(arg, &addr)
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	})
}

// TestSandboxNet: with Net, the sandbox reaches its gateway through the
// interface Attach put in its namespace (here a veth on a bridge in a test
// namespace, where a listener waits on the gateway address).
func TestSandboxNet(t *testing.T) {
	ids := testhost.SubIDs(t)
	if os.Geteuid() != 0 {
		testhost.Skip(t, "attaching a sandbox to a bridge needs CAP_NET_ADMIN")
	}
	ns := testhost.NewNetns(t)
	h, err := network.NewAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	subnet := netip.MustParsePrefix("10.213.0.0/24")
	if err := h.EnsureBridge("bgrtbr0", network.GatewayPrefix(subnet)); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := testhost.InNetns(ns, func() (err error) { ln, err = net.Listen("tcp", "10.213.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the bridge")
			c.Close()
		}
	}()
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	res, err := sandbox.Run(context.Background(), sandbox.Spec{IDs: ids, Job: "test.dial", Arg: ln.Addr().String(),
		Net: &sandbox.Net{Iface: "eth0", Addr: netip.MustParsePrefix("10.213.0.7/24"), Gateway: network.Gateway(subnet),
			Attach: func(pid int) error {
				sbNS, err := netns.GetFromPid(pid)
				if err != nil {
					return err
				}
				defer sbNS.Close()
				return h.CreateVeth("bgrtveth0", "bgrtbr0", "eth0", sbNS, mac)
			}}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(res) != `"hello from the bridge"` {
		t.Fatalf("the sandbox read %s", res)
	}
}
