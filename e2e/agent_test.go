package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
)

// TestAgent drives the guest agent through the CLI on one real VM, with
// the host kept busy by two CPU burners: the guest clock right after
// create, after 60 s, after a jump inside the guest, after stop/start and
// daemon restarts; vm exec and vm cp; and the session's recovery from
// agent restarts and SIGKILLed daemons.
func TestAgent(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.debianImage(ctx)
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	logStep := stepLogger(t)
	stopBurners := burnCPUs(t, 2)
	defer stopBurners()

	e.must(ctx, "vm", "create", "ag", "--cpus", "1", "--memory", "512")
	created := time.Now()
	logStep("vm create (two CPU burners on the host)")
	clockWithin(ctx, t, e, "ag", "right after vm create")
	t.Logf("guest clock source: %s", strings.TrimSpace(e.must(ctx, "vm", "exec", "ag", "--", "cat", "/sys/devices/system/clocksource/clocksource0/current_clocksource")))

	ping := func() api.PingResult {
		t.Helper()
		var r api.PingResult
		out := e.must(ctx, "vm", "ping", "--json", "--timeout", "10s", "ag")
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("vm ping --json: %v\n%s", err, out)
		}
		if !r.Alive || r.ClockOffsetMillis == nil {
			t.Fatalf("vm ping: %s", out)
		}
		return r
	}
	if r := ping(); *r.ClockOffsetMillis > 1000 || *r.ClockOffsetMillis < -1000 {
		t.Errorf("vm ping reports a clock offset of %.0f ms", *r.ClockOffsetMillis)
	}
	if v := e.vm(ctx, "ag"); v.ClockOffsetMillis == nil {
		t.Errorf("vm show has no clock offset")
	}

	t.Run("exec", func(t *testing.T) { execChecks(ctx, t, e, "ag") })
	logStep("exec checks")
	t.Run("cp", func(t *testing.T) { cpChecks(ctx, t, e, "ag") })
	logStep("cp checks")

	if d := time.Until(created.Add(60 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	clockWithin(ctx, t, e, "ag", "60 s after vm create")
	// Checked here, once the rest of the guest's boot (which goes on after
	// vm create returns) has had the time the checks above took.
	logStep("wait until 60 s after vm create")
	bootCuts(ctx, t, e, "ag")
	logStep("boot finished in the guest; its boot cuts checked")
	// An hour wrong inside the guest: back within 1 s within 30 s.
	e.must(ctx, "vm", "exec", "ag", "--", "date", "-s", fmt.Sprintf("@%d", time.Now().Add(-time.Hour).Unix()))
	jumped := time.Now()
	for !clockOK(ctx, t, e, "ag") {
		if time.Since(jumped) > 30*time.Second {
			t.Fatalf("the guest clock set an hour back is not back within 1 s after 30 s")
		}
		time.Sleep(time.Second)
	}
	t.Logf("the guest clock set an hour back was within 1 s again after %s", time.Since(jumped).Round(100*time.Millisecond))
	logStep("guest clock an hour back, corrected")

	// The agent restarts many times: the session recovers every time.
	// (Restarted over ssh: a restart through exec would end the very
	// stream that carries the systemctl.)
	for range 5 {
		e.must(ctx, "vm", "ssh", "--no-remind", "ag", "--", "systemctl", "restart", "banger-vsock-pingd")
		ping()
		e.must(ctx, "vm", "exec", "ag", "--", "true")
	}
	logStep("5 agent restarts, a ping and an exec after each")

	// The daemon is SIGKILLed many times: the next one syncs anew.
	for range 5 {
		st := e.daemonStatus(ctx)
		if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(st.PID, 0) != nil })
		ping()
		if out := e.must(ctx, "vm", "exec", "ag", "--", "cat", "/etc/hostname"); out != "ag\n" {
			t.Fatalf("exec after a daemon SIGKILL: %q", out)
		}
	}
	logStep("5 daemon SIGKILLs, a ping and an exec after each")

	t.Run("pause and resume", func(t *testing.T) { pauseChecks(ctx, t, e, "ag") })
	logStep("pause, a daemon SIGKILL while paused, resume (clock put right)")
	clockWithin(ctx, t, e, "ag", "after daemon restarts")
	if out := e.must(ctx, "vm", "ping", "ag"); !strings.Contains(out, "clock") {
		t.Fatalf("vm ping: %s", out)
	}

	// A paused VM stops as a running one does: the guest powers off.
	e.must(ctx, "vm", "pause", "ag")
	graceful := strings.Count(e.daemonLog(), "exited after the guest shut down")
	e.must(ctx, "vm", "stop", "ag")
	if strings.Count(e.daemonLog(), "exited after the guest shut down") != graceful+1 {
		t.Errorf("the stop of a paused VM was not graceful (the guest did not power off):\n%s", e.daemonLogTail())
	}
	e.must(ctx, "vm", "start", "ag")
	logStep("vm pause + vm stop (graceful) + vm start")
	clockWithin(ctx, t, e, "ag", "after vm stop + vm start")
	stopBurners()
	e.must(ctx, "vm", "rm", "--force", "ag")
}

// pauseChecks pauses the running VM name: vm ls, vm show and vm ping say
// paused, vm exec and vm ssh refuse saying so, a SIGKILLed daemon's
// successor still shows it paused (it asks the VMM); after resume its
// clock, which stood still, is right again and exec works.
func pauseChecks(ctx context.Context, t *testing.T, e *env, name string) {
	state := func() string {
		t.Helper()
		var vms []api.VM
		if err := json.Unmarshal([]byte(e.must(ctx, "vm", "ls", "--json")), &vms); err != nil {
			t.Fatal(err)
		}
		for _, v := range vms {
			if v.Name == name {
				if show := e.vm(ctx, name).State; show != v.State {
					t.Errorf("vm ls says %s, vm show %s", v.State, show)
				}
				return v.State
			}
		}
		t.Fatalf("vm ls does not list %s", name)
		return ""
	}
	start := time.Now()
	if out := e.must(ctx, "vm", "pause", name); out != name+" is paused\n" {
		t.Fatalf("vm pause: %q", out)
	}
	t.Logf("vm pause: %s", time.Since(start).Round(time.Millisecond))
	if s := state(); s != api.StatePaused {
		t.Fatalf("after vm pause: %s", s)
	}
	if out := e.must(ctx, "vm", "ls"); !strings.Contains(out, "paused") {
		t.Errorf("vm ls does not show paused:\n%s", out)
	}
	for _, args := range [][]string{{"vm", "exec", name, "--", "true"}, {"vm", "ssh", name, "--", "true"}} {
		if r := e.banger(ctx, args...); r.code == 0 || !strings.Contains(r.stderr, "is paused: resume it with `banger vm resume "+name+"`") {
			t.Errorf("%s on a paused VM: exit %d, %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if r := e.banger(ctx, "vm", "ping", name); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "paused") {
		t.Errorf("vm ping of a paused VM: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	st := e.daemonStatus(ctx)
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(st.PID, 0) != nil })
	if s := state(); s != api.StatePaused {
		t.Fatalf("after a daemon SIGKILL: %s, want paused", s)
	}
	// Long enough for a clock that stood still to be visibly wrong.
	time.Sleep(5 * time.Second)
	start = time.Now()
	if out := e.must(ctx, "vm", "resume", name); out != name+" is running\n" {
		t.Fatalf("vm resume: %q", out)
	}
	t.Logf("vm resume (with the clock's correction): %s", time.Since(start).Round(time.Millisecond))
	if s := state(); s != api.StateRunning {
		t.Fatalf("after vm resume: %s", s)
	}
	clockWithin(ctx, t, e, name, "right after vm resume")
	if out := e.must(ctx, "vm", "exec", name, "--", "cat", "/etc/hostname"); out != name+"\n" {
		t.Fatalf("exec after resume: %q", out)
	}
}

// bootCuts checks, in a guest that booted once, what keeps its cold boot
// short (issue 11): sshd and the agent start without waiting (even through
// another unit) for sysinit.target or basic.target, sshd without `sshd -t`
// first, systemd skipped its first-boot updates (the image has them done)
// and the generators for what a microVM never has or banger's kernel
// command line never asks for, with a login on the serial console still
// there (the getty generator's part); and the boot ends with
// no unit failed and no job timed out. It logs systemd-analyze.
func bootCuts(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	// is-system-running --wait returns once the boot ended: "running", or
	// "degraded" (with status 1) when a unit failed.
	r := e.banger(ctx, "vm", "exec", name, "--", "systemctl", "is-system-running", "--wait")
	if strings.TrimSpace(r.stdout) != "running" {
		failed := e.banger(ctx, "vm", "exec", name, "--", "systemctl", "--failed", "--no-legend")
		t.Errorf("the guest's boot ended %q (exit %d), not running; failed units:\n%s", strings.TrimSpace(r.stdout), r.code, failed.stdout)
	}
	out := e.must(ctx, "vm", "exec", name, "--", "sh", "-c",
		"systemd-analyze; systemd-analyze critical-chain ssh.service banger-vsock-pingd.service")
	t.Logf("in the guest:\n%s", out)
	// No time bound (a loaded host makes any bound flaky): what a slow boot
	// regression looks like is a job that waits for its timeout, which
	// systemd logs.
	if out := e.must(ctx, "vm", "exec", name, "--", "sh", "-c",
		"journalctl -b --no-pager -o cat _PID=1 | grep -i 'timed out' || true"); out != "" {
		t.Errorf("a job of the guest's boot waited for its timeout:\n%s", out)
	}
	show := e.must(ctx, "vm", "exec", name, "--", "systemctl", "show",
		"-p", "Id,DefaultDependencies,ExecStartPre,ConditionResult,StartupCPUWeight",
		"ssh.service", "banger-vsock-pingd.service", "systemd-sysusers.service")
	units := map[string]map[string]string{}
	for _, block := range strings.Split(strings.TrimSpace(show), "\n\n") {
		props := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			k, v, _ := strings.Cut(line, "=")
			props[k] = v
		}
		units[props["Id"]] = props
	}
	for unit, want := range map[string]map[string]string{
		"ssh.service":                {"DefaultDependencies": "no", "StartupCPUWeight": "1000"},
		"banger-vsock-pingd.service": {"DefaultDependencies": "no", "StartupCPUWeight": "1000"},
		"systemd-sysusers.service":   {"ConditionResult": "no"},
	} {
		for k, v := range want {
			if got, ok := units[unit][k]; !ok || got != v {
				t.Errorf("%s: %s=%q, want %q (systemctl show:\n%s)", unit, k, got, v, show)
			}
		}
	}
	// Nothing sshd or the agent waits for, however indirectly, waits for
	// sysinit.target (udev's coldplug, tmpfiles, the journal flush).
	for _, unit := range []string{"ssh.service", "banger-vsock-pingd.service"} {
		after := e.must(ctx, "vm", "exec", name, "--", "systemctl", "list-dependencies", "--after", "--plain", "--no-pager", unit)
		for _, target := range []string{"sysinit.target", "basic.target"} {
			if strings.Contains(after, target) {
				t.Errorf("%s starts after %s:\n%s", unit, target, after)
			}
		}
	}
	if pre := units["ssh.service"]["ExecStartPre"]; strings.Contains(pre, "sshd") {
		t.Errorf("ssh.service still runs sshd before sshd: ExecStartPre=%s", pre)
	}
	for _, g := range []string{"systemd-gpt-auto-generator", "systemd-debug-generator", "systemd-getty-generator"} {
		if out := e.must(ctx, "vm", "exec", name, "--", "readlink", "/etc/systemd/system-generators/"+g); out != "/dev/null\n" {
			t.Errorf("%s is not masked: %q", g, out)
		}
	}
	// What the getty generator did is still done: a login on the serial
	// console.
	if out := e.must(ctx, "vm", "exec", name, "--", "systemctl", "is-active", "serial-getty@ttyS0.service"); out != "active\n" {
		t.Errorf("no login on the serial console: serial-getty@ttyS0.service is %q", out)
	}
}

// burnCPUs keeps n host CPUs busy until the returned func is called. The
// burners run at nice 10: every CPU stays busy (the guest's vCPU thread
// is descheduled again and again, which is what made jiffies-based guest
// clocks lose ticks), while a TCG boot still gets enough CPU to finish on
// a shared machine.
func burnCPUs(t *testing.T, n int) (stop func()) {
	var cmds []*exec.Cmd
	for range n {
		c := exec.Command("nice", "-n", "10", "sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, c := range cmds {
				c.Process.Kill()
				c.Wait()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// guestClock reads the guest's clock through one `vm exec` that answers
// each line of its input with the guest's time, and returns the bounds of
// its offset from the host's: the guest's time was read between t0 (line
// sent) and t1 (answer back), so the offset lies in [g-t1, g-t0]. Of five
// readings it keeps the narrowest window (the exec's own start-up, seconds
// on a loaded host, is not in any of them).
func guestClock(ctx context.Context, t *testing.T, e *env, name string) (lo, hi time.Duration) {
	t.Helper()
	argv := e.cliArgv("vm", "exec", "-i", name, "--", "sh", "-c", "while read -r _; do date +%s.%N; done")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e.environ()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	out := bufio.NewReader(outPipe)
	best := time.Duration(-1)
	for range 5 {
		t0 := time.Now()
		io.WriteString(in, "\n")
		line, err := out.ReadString('\n')
		t1 := time.Now()
		if err != nil {
			t.Fatalf("read the guest clock: %v\n%s", err, stderr.String())
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
		if err != nil {
			t.Fatalf("guest date: %q", line)
		}
		g := time.Unix(0, int64(f*1e9))
		if w := t1.Sub(t0); best < 0 || w < best {
			best, lo, hi = w, g.Sub(t1), g.Sub(t0)
		}
	}
	return lo, hi
}

// clockOK reports whether the guest clock is within 1 s of the host's.
func clockOK(ctx context.Context, t *testing.T, e *env, name string) bool {
	lo, hi := guestClock(ctx, t, e, name)
	return lo >= -time.Second && hi <= time.Second
}

// clockWithin fails the test unless the guest clock is within 1 s of the
// host's.
func clockWithin(ctx context.Context, t *testing.T, e *env, name, when string) {
	t.Helper()
	lo, hi := guestClock(ctx, t, e, name)
	t.Logf("guest clock %s: between %v and %v from the host's", when, lo.Round(time.Millisecond), hi.Round(time.Millisecond))
	if lo < -time.Second || hi > time.Second {
		var set []string
		for _, l := range strings.Split(e.daemonLog(), "\n") {
			if strings.Contains(l, "clock") && strings.Contains(l, name) {
				set = append(set, l)
			}
		}
		// What the guest's clock runs on, and whether it is falling behind.
		cs := e.banger(ctx, "vm", "exec", name, "--", "sh", "-c", "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; dmesg | grep -i -E 'clocksource|tsc' | tail -5")
		time.Sleep(2 * time.Second)
		lo2, hi2 := guestClock(ctx, t, e, name)
		t.Errorf("guest clock %s: %v..%v from the host's, want within 1 s (2 s later: %v..%v); the daemon's log of its clock:\n%s\nthe guest's clocksource: %s%s", when, lo, hi, lo2, hi2, strings.Join(set, "\n"), cs.stdout, cs.stderr)
	}
}

// execChecks runs the vm exec acceptance checks on a running VM.
func execChecks(ctx context.Context, t *testing.T, e *env, name string) {
	// stdout and stderr apart, the exit status as is.
	r := e.banger(ctx, "vm", "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// argv exactly, -e and -w.
	if out := e.must(ctx, "vm", "exec", "-e", "A=b c", "-w", "/tmp", name, "--", "sh", "-c", `printf '%s|%s|%s' "$1" "$A" "$PWD"`, "x", "$HOME *"); out != "$HOME *|b c|/tmp" {
		t.Errorf("exec argv/env/dir: %q", out)
	}
	// A missing command.
	if r := e.banger(ctx, "vm", "exec", name, "--", "no-such-cmd"); r.code != 127 || !strings.Contains(r.stderr, "no-such-cmd") {
		t.Errorf("missing command: exit %d, stderr %q", r.code, r.stderr)
	}
	// 10 MiB of random bytes through cat, binary-safe.
	data := make([]byte, 10<<20)
	rand.Read(data)
	start := time.Now()
	got := e.pipe(ctx, data, "vm", "exec", "-i", name, "--", "cat")
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("10 MiB through cat: %d bytes back, SHA-256 differs", len(got))
	}
	t.Logf("10 MiB through cat: %s", time.Since(start).Round(10*time.Millisecond))
	// -t sees a terminal, of the size of ours.
	out := e.underPTY(ctx, 30, 100, "vm", "exec", "-t", name, "--", "sh", "-c", "test -t 0 && test -t 1 && echo tty-ok; stty size")
	if !strings.Contains(out, "tty-ok") || !strings.Contains(out, "30 100") {
		t.Errorf("exec -t under a pty: %q", out)
	}
	// Without sshd and with the guest network down.
	e.must(ctx, "vm", "exec", name, "--", "systemctl", "stop", "ssh")
	e.must(ctx, "vm", "exec", name, "--", "ip", "link", "set", "eth0", "down")
	if out := e.must(ctx, "vm", "exec", name, "--", "sh", "-c", "cat /sys/class/net/eth0/operstate; pgrep -x sshd || echo no-sshd"); !strings.Contains(out, "down") || !strings.Contains(out, "no-sshd") {
		t.Errorf("exec without network and sshd: %q", out)
	}
	e.must(ctx, "vm", "exec", name, "--", "ip", "link", "set", "eth0", "up")
	e.must(ctx, "vm", "exec", name, "--", "systemctl", "start", "ssh")
}

// cpChecks copies a tree with a symlink, an executable, an empty
// directory and a file name with spaces into the VM and back, and
// compares content and modes; missing paths on either side are clear
// errors.
func cpChecks(ctx context.Context, t *testing.T, e *env, name string) {
	src := filepath.Join(e.root, "cp-src")
	for _, d := range []string{"tree/empty", "tree/sub"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]os.FileMode{"tree/a file with spaces.txt": 0o640, "tree/sub/run.sh": 0o755}
	for f, mode := range files {
		if err := os.WriteFile(filepath.Join(src, f), []byte("content of "+f+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(src, f), mode)
	}
	if err := os.Symlink("../a file with spaces.txt", filepath.Join(src, "tree/sub/link")); err != nil {
		t.Fatal(err)
	}
	e.must(ctx, "vm", "cp", "-r", filepath.Join(src, "tree"), name+":/tmp/")
	// In the guest: the executable runs, the link is a link, the empty dir is there.
	out := e.must(ctx, "vm", "exec", name, "--", "sh", "-c",
		`cd /tmp/tree && sub/run.sh >/dev/null; stat -c '%n %a %F' 'a file with spaces.txt' sub/run.sh sub/link empty; readlink sub/link; cat sub/link`)
	for _, want := range []string{"a file with spaces.txt 640 regular file", "sub/run.sh 755 regular file", "sub/link 777 symbolic link", "empty 755 directory", "../a file with spaces.txt", "content of tree/a file with spaces.txt"} {
		if !strings.Contains(out, want) {
			t.Errorf("in the guest after cp: no %q in\n%s", want, out)
		}
	}
	back := filepath.Join(e.root, "cp-back")
	if err := os.Mkdir(back, 0o755); err != nil {
		t.Fatal(err)
	}
	e.must(ctx, "vm", "cp", "-r", name+":/tmp/tree", back)
	for _, rel := range []string{"", "empty", "sub", "a file with spaces.txt", "sub/run.sh", "sub/link"} {
		a, err1 := os.Lstat(filepath.Join(src, "tree", rel))
		b, err2 := os.Lstat(filepath.Join(back, "tree", rel))
		if err1 != nil || err2 != nil {
			t.Errorf("%s: %v %v", rel, err1, err2)
			continue
		}
		if a.Mode() != b.Mode() {
			t.Errorf("%s: mode %v after the round trip, was %v", rel, b.Mode(), a.Mode())
		}
		if a.Mode().IsRegular() {
			x, _ := os.ReadFile(filepath.Join(src, "tree", rel))
			y, _ := os.ReadFile(filepath.Join(back, "tree", rel))
			if !bytes.Equal(x, y) || !a.ModTime().Equal(b.ModTime()) {
				t.Errorf("%s: content or time differ after the round trip", rel)
			}
		}
	}
	if l, _ := os.Readlink(filepath.Join(back, "tree/sub/link")); l != "../a file with spaces.txt" {
		t.Errorf("link after the round trip: %q", l)
	}
	// A single file to a new name, and missing paths on either side.
	e.must(ctx, "vm", "cp", name+":/etc/hostname", filepath.Join(back, "hn"))
	if b, _ := os.ReadFile(filepath.Join(back, "hn")); string(b) != name+"\n" {
		t.Errorf("single file: %q", b)
	}
	if stderr := e.fails(ctx, "vm", "cp", name+":/no/such/file", back); !strings.Contains(stderr, "no such file or directory in the guest: /no/such/file") {
		t.Errorf("missing guest path: %s", stderr)
	}
	if stderr := e.fails(ctx, "vm", "cp", filepath.Join(src, "nope"), name+":/tmp"); !strings.Contains(stderr, "nope: no such file or directory") {
		t.Errorf("missing host path: %s", stderr)
	}
	if stderr := e.fails(ctx, "vm", "cp", filepath.Join(src, "tree"), name+":/tmp"); !strings.Contains(stderr, "-r") {
		t.Errorf("directory without -r: %s", stderr)
	}
	if stderr := e.fails(ctx, "vm", "cp", filepath.Join(src, "tree/sub/run.sh"), name+":/no/such/dir/x"); !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("missing guest folder: %s", stderr)
	}
}
