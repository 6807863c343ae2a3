// Package e2e boots real VMs with the real banger CLI, bangerd, QEMU, kernel
// and Debian image, inside a network namespace the test creates, so no VM
// traffic leaves it. It needs root, QEMU, mmdebstrap and Debian's package
// mirror (only for the image build, which runs outside the namespace).
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/testhost"
)

// env is one private banger installation: binaries, XDG dirs, runtime
// bundle and (optionally) a network namespace the CLI and daemon run in.
type env struct {
	t       *testing.T
	repo    string
	bin     string
	root    string // XDG dirs live under here
	runtime string
	netns   string
	bridge  string // network.bridge in its config.toml
	subnet  string // network.subnet in its config.toml
	// extraEnv is added to every CLI run (and so to a daemon it starts).
	extraEnv []string
	// cli, when set, is the banger binary to run instead of bin/banger.
	cli string
	// devTUN, when set, is a TUN clone device node bound over
	// /dev/net/tun for the CLI and the daemon it starts (in the mount
	// namespace `ip netns exec` makes for each run; see withDevTUN).
	devTUN string
}

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// requireHost skips unless the host can run the end-to-end tests; under
// CI=true a missing privilege or tool fails instead (testhost.Skip), naming
// every missing tool at once.
func requireHost(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	testhost.NeedRoot(t, "end-to-end tests make network namespaces, bridges and TAP devices")
	testhost.NeedTools(t, "qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "debugfs", "ssh", "ip", "tar")
}

// newEnv builds the binaries and makes private XDG dirs. The runtime bundle
// is the checkout's ./runtime, built with scripts/make-runtime.sh if absent.
func newEnv(t *testing.T) *env {
	t.Helper()
	repo := repoRoot(t)
	// Short paths: Unix sockets have a 107-byte limit.
	root, err := os.MkdirTemp("", "bgr-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, repo: repo, root: root, bin: filepath.Join(root, "bin"), runtime: filepath.Join(repo, "runtime")}
	t.Cleanup(func() {
		e.killDaemon()
		os.RemoveAll(root)
	})
	ldflags := "-X github.com/bangerhq/banger/internal/version.Version=e2e-" + fmt.Sprint(time.Now().UnixNano())
	for _, name := range []string{"banger", "bangerd", "banger-tui"} {
		out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(e.bin, name), filepath.Join(repo, "cmd", name)).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	// make runtime is quick when the bundle is current (the kernel is a
	// file target; the agent is rebuilt so images get this tree's agent).
	cmd := exec.Command("make", "-C", repo, "runtime", "RUNTIME="+e.runtime)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make runtime: %v\n%s", err, out)
	}
	// A bridge of its own: a daemon that runs outside the test's network
	// namespace (image builds) must not share one with another test run.
	envCount++
	e.bridge = fmt.Sprintf("bgr%d-%d", os.Getpid()%100000, envCount)
	e.subnet = freeSubnet(t)
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\n", e.bridge))
	// Image builds attach their sandbox to it on the host (outside the test's
	// namespace): remove it, and its policy tables, with the env.
	t.Cleanup(func() {
		if err := errors.Join(network.RemovePolicy(e.bridge), network.RemoveBridge(e.bridge)); err != nil {
			t.Errorf("remove the env's bridge %s from the host: %v", e.bridge, err)
		}
	})
	return e
}

// shared holds what the tests of this binary share, removed by TestMain.
var shared struct {
	mu sync.Mutex
	// debian is a hard link to the first Debian image built, for later
	// tests to import.
	debian string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.debian != "" {
		os.RemoveAll(filepath.Dir(shared.debian))
	}
	os.Exit(code)
}

// debianImage gives e an image called "default" built from
// debian:bookworm. The first call in a test binary builds it (this
// downloads packages, so call it before enterNetns) and keeps a hard link
// to the image file; later calls import that file instead (`banger image
// import`, seconds instead of a minute or more).
func (e *env) debianImage(ctx context.Context) {
	e.t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	start := time.Now()
	if shared.debian != "" {
		e.must(ctx, "image", "import", "default", shared.debian, "--quiet")
		e.t.Logf("image import of the Debian image built earlier: %s", time.Since(start).Round(time.Second))
		return
	}
	e.must(ctx, "image", "build", "default", "--from", "debian:bookworm")
	e.t.Logf("image build: %s", time.Since(start).Round(time.Second))
	dir, err := os.MkdirTemp("", "bgr-e2e-shared-")
	if err != nil {
		e.t.Fatal(err)
	}
	link := filepath.Join(dir, "debian.ext4")
	if err := os.Link(e.imageShow(ctx, "default").Path, link); err != nil {
		os.RemoveAll(dir)
		e.t.Logf("later tests build their own Debian image: %v", err)
		return
	}
	shared.debian = link
}

// freeSubnet returns a /24 that no address or route on the host overlaps,
// from 10.201.0.0/16 starting at a place of this process's own: the daemon
// of an env runs on the host for image builds too, and a subnet another
// test run (or a leftover bridge) holds would lose the build's replies.
func freeSubnet(t *testing.T) string {
	t.Helper()
	existing, err := network.HostPrefixes()
	if err != nil {
		t.Fatalf("list host prefixes: %v", err)
	}
	var candidates []netip.Prefix
	start := os.Getpid()*7 + envCount*31
	for i := range 250 {
		candidates = append(candidates, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 201, byte((start + i) % 250), 0}), 24))
	}
	p, err := network.ChooseSubnet(existing, candidates)
	if err != nil {
		t.Fatal(err)
	}
	return p.String()
}

// createWarm creates the VMs names from a warm template of the image
// "default" (see `banger image warm`), all of one shape: args are the
// shape flags (--cpus, --memory, --disk) given to both. The template costs
// one boot; each clone then starts in seconds instead of booting. Use it
// for test VMs that need no cold boot; it logs how long each part took.
func (e *env) createWarm(ctx context.Context, names []string, args ...string) {
	e.t.Helper()
	t0 := time.Now()
	e.must(ctx, append([]string{"image", "warm", "default"}, args...)...)
	e.t.Logf("image warm default %s: %s", strings.Join(args, " "), time.Since(t0).Round(100*time.Millisecond))
	for _, n := range names {
		t0 = time.Now()
		out := e.must(ctx, append([]string{"vm", "create", n}, args...)...)
		if !strings.Contains(out, "(template ") {
			e.t.Fatalf("vm create %s did not clone the template: %s", n, out)
		}
		e.t.Logf("vm create %s from the template: %s", n, time.Since(t0).Round(100*time.Millisecond))
	}
}

// envCount numbers the envs of this test process (for unique bridge names).
var envCount int

// writeConfig replaces the env's config.toml with toml.
// writeConfig writes the env's config.toml; its [network] table always
// gets the env's subnet (see freeSubnet) unless toml sets one.
func (e *env) writeConfig(toml string) {
	e.t.Helper()
	if !strings.Contains(toml, "subnet =") {
		toml = strings.Replace(toml, "[network]\n", fmt.Sprintf("[network]\nsubnet = %q\n", e.subnet), 1)
	}
	dir := filepath.Join(e.root, "config", "banger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(toml), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) environ() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.root,
		"XDG_CONFIG_HOME=" + filepath.Join(e.root, "config"),
		"XDG_STATE_HOME=" + filepath.Join(e.root, "state"),
		"XDG_DATA_HOME=" + filepath.Join(e.root, "data"),
		"XDG_CACHE_HOME=" + cacheHome(),
		"XDG_RUNTIME_DIR=" + filepath.Join(e.root, "run"),
	}
	if e.runtime != "" {
		env = append(env, "BANGER_RUNTIME_DIR="+e.runtime)
	}
	for _, k := range []string{"BANGER_ACCEL", "BANGER_BOOT_TIMEOUT", "BANGER_STALL_TIMEOUT"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return append(env, e.extraEnv...)
}

// cacheHome is shared between runs so downloads are reused.
func cacheHome() string {
	if v := os.Getenv("XDG_CACHE_HOME"); v != "" {
		return v
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache")
}

// result of one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// banger runs the CLI (inside the namespace when one is set).
func (e *env) banger(ctx context.Context, args ...string) result {
	e.t.Helper()
	argv := e.cliArgv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e.environ()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run banger %v: %v", args, err)
	}
	return r
}

// cliArgv is the argv that runs the CLI with args (inside the namespace
// when one is set).
func (e *env) cliArgv(args ...string) []string {
	bin := filepath.Join(e.bin, "banger")
	if e.cli != "" {
		bin = e.cli
	}
	argv := append([]string{bin}, args...)
	if e.netns != "" {
		if e.devTUN != "" {
			// `ip netns exec` runs its command in a mount namespace of
			// its own whose mounts do not propagate to the host's.
			argv = append([]string{"sh", "-c", `mount --bind "$0" /dev/net/tun && exec "$@"`, e.devTUN}, argv...)
		}
		argv = append([]string{"ip", "netns", "exec", e.netns}, argv...)
	}
	return argv
}

// pipe runs the CLI with stdin and returns its stdout; a non-zero exit
// fails the test.
func (e *env) pipe(ctx context.Context, stdin []byte, args ...string) []byte {
	e.t.Helper()
	argv := e.cliArgv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e.environ()
	cmd.Stdin = bytes.NewReader(stdin)
	var se bytes.Buffer
	cmd.Stderr = &se
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("banger %s: %v\nstderr: %s", strings.Join(args, " "), err, se.String())
	}
	return out
}

// underPTY runs the CLI on a new pseudo-terminal of rows x cols and
// returns what it wrote there.
func (e *env) underPTY(ctx context.Context, rows, cols uint16, args ...string) string {
	e.t.Helper()
	argv := e.cliArgv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(e.environ(), "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		e.t.Fatalf("start banger under a pty: %v", err)
	}
	defer f.Close()
	var out bytes.Buffer
	io.Copy(&out, f) // ends with EIO once the CLI has exited
	if err := cmd.Wait(); err != nil {
		e.t.Fatalf("banger %s under a pty: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// must runs the CLI and fails the test on a non-zero exit.
func (e *env) must(ctx context.Context, args ...string) string {
	e.t.Helper()
	r := e.banger(ctx, args...)
	if r.code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, e.daemonLogTail())
	}
	return r.stdout
}

// fails runs the CLI, expects a non-zero exit and returns stderr.
func (e *env) fails(ctx context.Context, args ...string) string {
	e.t.Helper()
	r := e.banger(ctx, args...)
	if r.code == 0 {
		e.t.Fatalf("banger %s succeeded, want failure\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	return r.stderr
}

func (e *env) vm(ctx context.Context, name string) api.VM {
	e.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "show", "--json", name)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// namesByState returns the names of vms: all of them, the running ones
// and the stopped ones.
func namesByState(vms []api.VM) (all, running, stopped []string) {
	for _, v := range vms {
		all = append(all, v.Name)
		switch v.State {
		case api.StateRunning:
			running = append(running, v.Name)
		case api.StateStopped:
			stopped = append(stopped, v.Name)
		}
	}
	return all, running, stopped
}

func (e *env) daemonStatus(ctx context.Context) api.DaemonStatus {
	e.t.Helper()
	var st api.DaemonStatus
	if err := json.Unmarshal([]byte(e.must(ctx, "daemon", "status", "--json")), &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// daemonLog is the env's whole daemon log.
func (e *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(e.root, "state", "banger", "bangerd.log"))
	return string(b)
}

func (e *env) daemonLogTail() string {
	s := e.daemonLog()
	if len(s) > 6000 {
		s = s[len(s)-6000:]
	}
	return s
}

// killDaemon SIGKILLs a daemon of this env, if one runs.
func (e *env) killDaemon() {
	b, err := os.ReadFile(filepath.Join(e.root, "run", "banger", "bangerd.pid"))
	if err != nil {
		return
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// enterNetns creates a network namespace for the daemon and VMs; every
// later CLI call (and the daemon it starts) runs inside it.
func (e *env) enterNetns() {
	e.t.Helper()
	name := fmt.Sprintf("bgr-e2e-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		e.t.Fatalf("ip netns add: %v: %s", err, out)
	}
	e.t.Cleanup(func() {
		// Kill anything still running in the namespace, then delete it.
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		for _, f := range strings.Fields(string(out)) {
			var pid int
			fmt.Sscan(f, &pid)
			if pid > 0 && pid != os.Getpid() { // never this test binary
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
	})
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		e.t.Fatalf("lo up: %v: %s", err, out)
	}
	e.netns = name
}

// inNetns runs a command in the test namespace and returns its output.
func (e *env) inNetns(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", e.netns}, args...)...).CombinedOutput()
	return string(out), err
}

// stepLogger returns a func that logs what was done and how long it took
// since the previous call (or since stepLogger).
func stepLogger(t *testing.T) func(what string) {
	step := time.Now()
	return func(what string) {
		t.Helper()
		t.Logf("%s: %s", what, time.Since(step).Round(100*time.Millisecond))
		step = time.Now()
	}
}

// waitFor polls cond until it is true or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sandboxProcesses returns the pids of the build sandboxes (and guarded
// tools) of this env's daemon: their command line carries its owner token, a
// hash of its state folder (see daemon.ownerToken).
func (e *env) sandboxProcesses() []int {
	sum := sha256.Sum256([]byte(filepath.Join(e.root, "state", "banger")))
	return processesMatching("bgr-" + hex.EncodeToString(sum[:8]))
}

// processesUsing returns pids that hold a file below dir open (a VMM
// opens nothing by path: its command line names no file, but its
// descriptors do) or whose command line names dir.
func processesUsing(dir string) []int {
	var pids []int
	named := processesMatching(dir)
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscan(ent.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", ent.Name(), "fd"))
		held := false
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", ent.Name(), "fd", fd.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
				held = true
				break
			}
		}
		if held || slices.Contains(named, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processesMatching returns pids whose command line contains s.
func processesMatching(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscan(ent.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
