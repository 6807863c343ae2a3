// Package vmmtest holds what the tests of every VMM driver share: a logger
// that keeps what was logged, the identity a test VMM runs as, checks of a
// running VMM's confinement (its uid, seccomp, no_new_privs) and of what it
// leaves behind, and a stand-in daemon process that starts a VM and is
// killed, for the tests that a VMM outlives its daemon.
package vmmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/testhost"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// Logger returns a logger that logs through t and keeps a copy.
func Logger(t *testing.T) (*slog.Logger, *LogBuf) {
	buf := &LogBuf{t: t}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// LogBuf is what a Logger logged.
type LogBuf struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (w *LogBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return w.b.Write(p)
}

// String is everything logged so far.
func (w *LogBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestSlot is the VMM slot tests run their VMMs in: the last one, which a
// daemon hands out only when every other is taken.
const TestSlot = subid.VMMSlots - 1

// RunAs returns the identity a test VMM runs as, as a root daemon would
// run it: a VMM slot of root's subordinate ids (`make deps` sets them up;
// the test skips, naming the fix, when they are missing). Not as root it
// returns nil: the VMM runs as the test's own user, as under a daemon that
// is not root.
func RunAs(t *testing.T) *vmm.Identity {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	ids, err := subid.Lookup(subid.System, "root", 0)
	if err != nil {
		testhost.Skip(t, "root has no subordinate ids for VMMs: %v", err)
	}
	uid, gid, err := ids.VMM(TestSlot)
	if err != nil {
		t.Fatal(err)
	}
	return &vmm.Identity{UID: uid, GID: gid}
}

// EnsureStopped kills whatever st describes at test end, so a failing test
// leaves no VMM behind.
func EnsureStopped(t *testing.T, st vmm.State) {
	t.Cleanup(func() {
		if proc.Alive(st.PID, st.StartTime) {
			t.Logf("cleanup: killing leftover vmm %d", st.PID)
			proc.Signal(st.PID, st.StartTime, syscall.SIGKILL)
		}
	})
}

// Status returns the fields of /proc/PID/status ("Uid", "Seccomp", ...).
func Status(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("status of vmm pid %d: %v", pid, err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// AssertConfined checks the running VMM of st: it runs as want (all four
// uids and gids; the test's own user when want is nil), has no
// supplementary group beyond groups, matches st.RunAs, and, when seccomp,
// has a seccomp filter and no_new_privs.
func AssertConfined(t *testing.T, st vmm.State, want *vmm.Identity, seccomp bool, groups ...uint32) {
	t.Helper()
	id := vmm.Self()
	if want != nil {
		id = *want
	}
	if st.RunAs == nil || *st.RunAs != id {
		t.Errorf("state says the vmm runs as %v, want %v", st.RunAs, id)
	}
	s := Status(t, st.PID)
	u, g := fmt.Sprint(id.UID), fmt.Sprint(id.GID)
	if got, want := strings.Fields(s["Uid"]), []string{u, u, u, u}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("vmm pid %d: Uid %v, want %v", st.PID, got, want)
	}
	if got, want := strings.Fields(s["Gid"]), []string{g, g, g, g}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("vmm pid %d: Gid %v, want %v", st.PID, got, want)
	}
	if want != nil {
		var wantGroups []string
		for _, g := range groups {
			wantGroups = append(wantGroups, fmt.Sprint(g))
		}
		if got := strings.Fields(s["Groups"]); fmt.Sprint(got) != fmt.Sprint(wantGroups) {
			t.Errorf("vmm pid %d: supplementary groups %v, want %v", st.PID, got, wantGroups)
		}
		if s["CapEff"] != "0000000000000000" {
			t.Errorf("vmm pid %d: effective capabilities %s, want none", st.PID, s["CapEff"])
		}
	}
	if seccomp && (s["Seccomp"] != "2" || s["NoNewPrivs"] != "1") {
		t.Errorf("vmm pid %d: Seccomp %s NoNewPrivs %s, want 2 and 1", st.PID, s["Seccomp"], s["NoNewPrivs"])
	}
	t.Logf("vmm pid %d: Uid %s, Gid %s, Groups %q, Seccomp %s, NoNewPrivs %s", st.PID, s["Uid"], s["Gid"], s["Groups"], s["Seccomp"], s["NoNewPrivs"])
}

// AssertNotOwnedBy fails for every file under dir owned by uid, except the
// paths in except (which must be).
func AssertNotOwnedBy(t *testing.T, dir string, uid uint32, except ...string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		owned := fi.Sys().(*syscall.Stat_t).Uid == uid
		allowed := false
		for _, e := range except {
			allowed = allowed || p == e || strings.HasPrefix(p, e+"/")
		}
		if owned && !allowed {
			t.Errorf("%s became owned by the vmm uid %d", p, uid)
		}
		return nil
	})
}

// Gone fails for each path that still exists.
func Gone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

// PPID returns the parent of pid, and false when pid is gone.
func PPID(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return n, true
}

// WaitReaped fails unless pid, once our child, is gone or no longer ours
// within a few seconds: the driver must reap the VMMs it launched.
func WaitReaped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ppid, ok := PPID(pid)
		if !ok || ppid != os.Getpid() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still our child (a zombie?)", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// helperEnv carries the spec to a stand-in daemon.
const helperEnv = "BANGER_VMM_TEST_HELPER"

// HelperDaemon is the body of a package's TestHelperDaemon: in the process
// that StartInHelper runs it starts the VM with the driver newDriver
// returns, prints its State and waits to be killed; in a normal test run
// it skips.
func HelperDaemon(t *testing.T, newDriver func() vmm.Driver) {
	specJSON := os.Getenv(helperEnv)
	if specJSON == "" {
		t.Skip("helper process for the tests that a VMM outlives its daemon")
	}
	var spec vmm.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	st, err := newDriver().Start(context.Background(), spec)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(st)
	fmt.Println("STATE", string(b))
	select {} // until killed
}

// StartInHelper runs the test binary's TestHelperDaemon as a stand-in
// daemon (with env added to its environment) that starts spec, and
// returns the VM's State and the daemon process, which the test then kills.
func StartInHelper(t *testing.T, spec vmm.Spec, env ...string) (vmm.State, *exec.Cmd) {
	t.Helper()
	sj, _ := json.Marshal(spec)
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$", "-test.v")
	helper.Env = append(append(os.Environ(), helperEnv+"="+string(sj)), env...)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { helper.Process.Kill(); helper.Wait() })
	var st vmm.State
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "STATE "); ok {
			if err := json.Unmarshal([]byte(s), &st); err != nil {
				t.Fatal(err)
			}
			break
		}
		if strings.HasPrefix(line, "ERR ") {
			t.Fatalf("helper daemon: %s", line)
		}
	}
	if st.PID == 0 {
		t.Fatal("helper daemon printed no state")
	}
	EnsureStopped(t, st)
	if ppid, _ := PPID(st.PID); ppid != helper.Process.Pid {
		t.Errorf("the vmm's parent is %d, want the helper daemon %d", ppid, helper.Process.Pid)
	}
	return st, helper
}

// KillHelper SIGKILLs the stand-in daemon: no chance to clean up anything.
func KillHelper(helper *exec.Cmd) {
	helper.Process.Kill()
	helper.Wait()
	time.Sleep(300 * time.Millisecond)
}

// Refusals describes a driver for StartRefusals.
type Refusals struct {
	// Driver is the driver under test; WithBinary makes one that runs the
	// given binary.
	Driver     vmm.Driver
	WithBinary func(bin string) vmm.Driver
	// Spec makes a spec that starts, in a fresh folder.
	Spec func(t *testing.T, id string) vmm.Spec
	// Control and Agent are where the driver puts its control and agent
	// sockets for a VM folder.
	Control, Agent func(dir string) string
}

// StartRefusals runs the Start refusals every driver shares: a VM folder so
// deep that the control socket would pass the kernel's limit, which the
// error must name with the fix; an agent socket that something still
// answers on, which Start must refuse and leave in place; and a missing
// binary, which the error must name.
func StartRefusals(t *testing.T, r Refusals) {
	ctx := context.Background()
	t.Run("socket path too long", func(t *testing.T) {
		spec := r.Spec(t, "long")
		long := filepath.Join(spec.Dir, strings.Repeat("x", 90))
		if err := os.Mkdir(long, 0o700); err != nil {
			t.Fatal(err)
		}
		spec.Dir = long
		_, err := r.Driver.Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), r.Control(long)) || !strings.Contains(err.Error(), "limit of 107") || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
			t.Fatalf("err = %v, want one naming the socket path, the limit and the fix", err)
		}
	})
	t.Run("socket answers", func(t *testing.T) {
		spec := r.Spec(t, "busy")
		sock := r.Agent(spec.Dir)
		os.MkdirAll(filepath.Dir(sock), 0o700)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		st, err := r.Driver.Start(ctx, spec)
		if err == nil {
			EnsureStopped(t, st)
			t.Fatal("Start succeeded beside a live socket")
		}
		if !strings.Contains(err.Error(), "answers") {
			t.Fatalf("err = %v, want a refusal because the socket answers", err)
		}
		if _, err := os.Stat(sock); err != nil {
			t.Errorf("live socket was removed: %v", err)
		}
	})
	t.Run("missing binary", func(t *testing.T) {
		spec := r.Spec(t, "nobin")
		_, err := r.WithBinary("/nonexistent/vmm").Start(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/vmm") {
			t.Fatalf("err = %v", err)
		}
	})
}

// Readopt plays a daemon restart: st goes through JSON as the daemon
// persists it, and fresh (a new driver) must find the VM alive and Recover
// it, while a state with another start time (a recycled pid) is neither
// alive nor recoverable. It returns the state as read back.
func Readopt(t *testing.T, fresh vmm.Driver, st vmm.State) vmm.State {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var st2 vmm.State
	if err := json.Unmarshal(b, &st2); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if !fresh.Alive(st2) {
		t.Fatal("fresh driver: not alive")
	}
	if err := fresh.Recover(ctx, st2); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	bogus := st2
	bogus.StartTime++
	if fresh.Alive(bogus) {
		t.Fatal("state with a wrong start time reported alive")
	}
	if err := fresh.Recover(ctx, bogus); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Recover with a wrong start time: %v, want ErrNotRunning", err)
	}
	return st2
}

// AssertStopped checks a VM that d stopped: the process is gone and was
// reaped, its sockets are gone, the console log stays, and stopping or
// recovering it again says it is not running.
func AssertStopped(t *testing.T, d vmm.Driver, st vmm.State) {
	t.Helper()
	if d.Alive(st) {
		t.Fatal("alive after Stop")
	}
	WaitReaped(t, st.PID)
	Gone(t, st.ControlSocket, st.AgentSocket)
	if _, err := os.Stat(st.ConsoleLog); st.ConsoleLog != "" && err != nil {
		t.Errorf("console log removed: %v", err)
	}
	ctx := context.Background()
	if err := d.Stop(ctx, st, false, time.Second); err != nil {
		t.Errorf("Stop of a stopped VM: %v", err)
	}
	if err := d.Recover(ctx, st); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Recover after Stop: %v, want ErrNotRunning", err)
	}
}

// AssertDialAgent checks d's agent channel: it is called channel, reaches
// the agent of st (whose other end serves the agent protocol as "dev"),
// and refuses a state without an agent socket with ErrUnsupported.
func AssertDialAgent(t *testing.T, d vmm.Driver, st vmm.State, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vmm.DialAgent(ctx, d, st)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, _, err := agent.Ping(ctx, c); err != nil || !r.OK || r.Hostname != "dev" {
		t.Fatalf("ping = %+v, %v", r, err)
	}
	if ch := vmm.AgentChannel(d); ch != channel {
		t.Errorf("channel %q, want %q", ch, channel)
	}
	if _, err := vmm.DialAgent(ctx, d, vmm.State{Driver: d.Name()}); !errors.Is(err, vmm.ErrUnsupported) {
		t.Errorf("no agent socket: %v, want ErrUnsupported", err)
	}
}

// ServeAgent serves the agent protocol on c as a guest named "dev".
func ServeAgent(c net.Conn) {
	agent.Serve(context.Background(), c, func() (agent.Info, error) { return agent.Info{Hostname: "dev"}, nil })
}

// CheckPauser pauses and resumes the running VMM st through p, twice each
// way (a second pause, or resume, must succeed too), reading the state back
// with p.Paused after every step; also, when set, checks the VMM's own
// account after each step. It fails t at the first wrong answer.
func CheckPauser(t *testing.T, p vmm.Pauser, st vmm.State, also func(step string, paused bool)) {
	t.Helper()
	ctx := context.Background()
	for _, step := range []struct {
		name string
		do   func(context.Context, vmm.State) error
		want bool
	}{{"pause", p.Pause, true}, {"pause again", p.Pause, true}, {"resume", p.Resume, false}, {"resume again", p.Resume, false}, {"pause", p.Pause, true}, {"resume", p.Resume, false}} {
		if err := step.do(ctx, st); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		paused, err := p.Paused(ctx, st)
		if err != nil || paused != step.want {
			t.Fatalf("after %s: paused %v, %v; want %v", step.name, paused, err, step.want)
		}
		if also != nil {
			also(step.name, step.want)
		}
	}
	if err := p.Pause(ctx, vmm.State{}); err == nil {
		t.Error("pause without a control socket: no error")
	}
}
