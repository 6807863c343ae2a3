package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
)

// The checks every VMM's warm-template clones must pass, written once and
// run for QEMU (TestTemplates) and for Firecracker on its simulator
// (TestFirecrackerSimulator).

// createClones runs `vm create NAME --json` with args for each of names at
// once and returns the VMs; each must have been started from the template
// whose key is tplKey.
func createClones(ctx context.Context, t *testing.T, e *env, tplKey string, names []string, args ...string) []api.VM {
	t.Helper()
	vms := make([]api.VM, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			out := e.must(ctx, append([]string{"vm", "create", n, "--json"}, args...)...)
			if err := json.Unmarshal([]byte(out), &vms[i]); err != nil {
				t.Errorf("vm create --json: %v\n%s", err, out)
			}
		})
	}
	wg.Wait()
	for _, v := range vms {
		if !strings.HasPrefix(v.BootedFrom, "template "+tplKey[:12]) {
			t.Fatalf("vm create %s: booted from %q, want template %s", v.Name, v.BootedFrom, tplKey[:12])
		}
	}
	return vms
}

// cloneChecks: clones vms (at least two, running) are machines of their
// own: hostname, MAC and address are their rows', the SSH host key is the
// pinned one, the clock is within 1 s of the host's, the agent answers;
// no two share address, MAC, hostname, machine-id, SSH host key or the
// first bytes of /dev/urandom. The first reaches the second (its SSH
// banner) and writes /root/NAME-file ("mine"), which the second does not
// have.
func cloneChecks(ctx context.Context, t *testing.T, e *env, vms []api.VM) {
	t.Helper()
	type facts struct{ hostname, machineID, random, mac, addr, hostKey, noIPv6 string }
	got := make([]facts, len(vms))
	for i, v := range vms {
		out := e.must(ctx, "vm", "ssh", "--no-remind", v.Name, "--", "sh", "-c",
			"cat /etc/hostname /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "+
				"cat /sys/class/net/*/address | grep -v 00:00:00:00:00:00; ip -4 -o addr show scope global | awk '{print $4}'; "+
				"cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; "+noIPv6Cmd)
		l := strings.Split(strings.TrimSpace(out), "\n")
		if len(l) != 7 {
			t.Fatalf("facts of %s: %q", v.Name, out)
		}
		f := facts{l[0], l[1], l[2], l[3], l[4], l[5], l[6]}
		got[i] = f
		t.Logf("%s: %+v", v.Name, f)
		if f.hostname != v.Name || f.mac != v.MAC || !strings.HasPrefix(f.addr, v.IP+"/") {
			t.Errorf("%s: hostname %q, mac %q, address %q; want %s, %s, %s", v.Name, f.hostname, f.mac, f.addr, v.Name, v.MAC, v.IP)
		}
		if f.noIPv6 != "1" {
			t.Errorf("%s: disable_ipv6 of its network device is %q, want 1 (banger's bridge carries no IPv6)", v.Name, f.noIPv6)
		}
		kh, err := os.ReadFile(filepath.Join(v.Dir, "known_hosts"))
		if err != nil || !strings.Contains(string(kh), f.hostKey) {
			t.Errorf("%s: host key %q is not the pinned one (%q, %v)", v.Name, f.hostKey, kh, err)
		}
		clockWithin(ctx, t, e, v.Name, "of a clone")
		if out := e.must(ctx, "vm", "ping", v.Name); !strings.Contains(out, v.Name+" is alive") {
			t.Errorf("vm ping %s: %s", v.Name, out)
		}
	}
	for i := range got {
		for j := range i {
			a, b := got[i], got[j]
			for what, pair := range map[string][2]string{"ip": {a.addr, b.addr}, "mac": {a.mac, b.mac}, "hostname": {a.hostname, b.hostname},
				"machine-id": {a.machineID, b.machineID}, "ssh host key": {a.hostKey, b.hostKey}, "first bytes of /dev/urandom": {a.random, b.random}} {
				if pair[0] == pair[1] {
					t.Errorf("clones %s and %s share their %s: %q", vms[i].Name, vms[j].Name, what, pair[0])
				}
			}
		}
	}
	first, second := vms[0].Name, vms[1].Name
	e.must(ctx, "vm", "ssh", "--no-remind", first, "--", "sh", "-c", "timeout 10 bash -c 'exec 3<>/dev/tcp/"+vms[1].IP+"/22 && head -c 4 <&3' | grep -q SSH- && echo mine > /root/"+first+"-file && sync")
	if out := e.must(ctx, "vm", "ssh", "--no-remind", second, "--", "ls", "/root"); strings.Contains(out, first+"-file") {
		t.Errorf("a file written in %s is in %s: %q", first, second, out)
	}
}

// restartChecks: vm restart of clone name (which cloneChecks wrote
// /root/NAME-file in) boots it cold (a new boot id) with its disk kept.
func restartChecks(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	bootID := func() string {
		return strings.TrimSpace(e.must(ctx, "vm", "exec", name, "--", "cat", "/proc/sys/kernel/random/boot_id"))
	}
	before := bootID()
	e.must(ctx, "vm", "restart", name)
	if after := bootID(); after == before {
		t.Errorf("vm restart of clone %s kept boot id %s: not a boot", name, after)
	}
	if out := e.must(ctx, "vm", "ssh", "--no-remind", name, "--", "sh", "-c", "cat /root/"+name+"-file /etc/hostname; "+noIPv6Cmd); out != "mine\n"+name+"\n1\n" {
		t.Errorf("after vm restart of clone %s: %q, want its file, hostname and disable_ipv6 (1) of its network device", name, out)
	}
}

// noIPv6Cmd prints disable_ipv6 of the guest's network device (the one
// with a device behind it), as banger-net set it.
const noIPv6Cmd = `for d in /sys/class/net/*; do if [ -e "$d/device" ]; then cat "/proc/sys/net/ipv6/conf/${d##*/}/disable_ipv6"; fi; done`

// killDuringCreate SIGKILLs the daemon while `vm create name args...` (a
// clone) runs, once the clone's VMM holds its files (or, should the
// create end first, 30 s after its folder appeared), and checks that the next
// daemon shows nothing half-made: the VM is gone or whole (running or
// stopped), and every VM folder, jail, TAP device and process under the
// state folder belongs to a VM it lists (a process to a running VM's VMM
// or a descendant of it). It removes the VM.
func killDuringCreate(ctx context.Context, t *testing.T, e *env, name string, args ...string) {
	t.Helper()
	state := filepath.Join(e.root, "state", "banger")
	vmsDir := filepath.Join(state, "vms")
	known, _ := os.ReadDir(vmsDir)
	tapsBefore := taps(e)
	argv := e.cliArgv(append([]string{"vm", "create", name}, args...)...)
	create := exec.CommandContext(ctx, argv[0], argv[1:]...)
	create.Env = e.environ()
	if err := create.Start(); err != nil {
		t.Fatal(err)
	}
	created := make(chan struct{})
	go func() { create.Wait(); close(created) }()
	var id string
	waitFor(t, time.Minute, "the clone's folder", func() bool {
		now, _ := os.ReadDir(vmsDir)
		for _, f := range now {
			if !slices.ContainsFunc(known, func(k os.DirEntry) bool { return k.Name() == f.Name() }) {
				id = f.Name()
				return true
			}
		}
		return false
	})
	pid := e.daemonStatus(ctx).PID
	launched := func() bool {
		jails, _ := filepath.Glob(filepath.Join(state, "jailer", "*", id))
		for _, d := range append(jails, filepath.Join(vmsDir, id)) {
			if slices.ContainsFunc(processesUsing(d), func(p int) bool { return p != pid }) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for !launched() && time.Now().Before(deadline) && !chanDone(created) {
		time.Sleep(20 * time.Millisecond)
	}
	if chanDone(created) {
		t.Logf("vm create %s ended before its VMM was seen", name)
	} else if launched() {
		t.Logf("the daemon SIGKILLed with %s's VMM launched", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-created
	waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(pid, 0) != nil })
	var list []api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "ls", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	ids, vmms, ownTAPs := map[string]bool{}, map[int]bool{}, map[string]bool{}
	for _, v := range list {
		ids[v.ID] = true
		if v.State == api.StateRunning {
			vmms[v.PID], ownTAPs[v.TAP] = true, true
		}
		if v.Name == name {
			t.Logf("%s after a SIGKILL during its clone: %s", name, v.State)
			if v.State != api.StateRunning && v.State != api.StateStopped {
				t.Errorf("%s after a SIGKILL during its clone: %s", name, v.State)
			}
		}
	}
	folders, _ := os.ReadDir(vmsDir)
	for _, f := range folders {
		if !ids[f.Name()] {
			t.Errorf("after a SIGKILL during a clone: VM folder %s of no VM", f.Name())
		}
	}
	jails, _ := filepath.Glob(filepath.Join(state, "jailer", "*", "*"))
	for _, j := range jails {
		if !ids[filepath.Base(j)] {
			t.Errorf("after a SIGKILL during a clone: jail %s of no VM", j)
		}
	}
	for tap := range taps(e) {
		if !tapsBefore[tap] && !ownTAPs[tap] {
			t.Errorf("after a SIGKILL during a clone: TAP %s of no running VM", tap)
		}
	}
	daemon := e.daemonStatus(ctx).PID
	for _, p := range processesUsing(filepath.Join(e.root, "state")) {
		if p != daemon && !descendsFrom(p, vmms) {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			t.Errorf("after a SIGKILL during a clone: process %d (%s) of no running VM", p, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	e.banger(ctx, "vm", "rm", "--force", name)
}

// chanDone reports whether c is closed.
func chanDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// taps returns the TAP devices (banger's prefix) in the env's namespace.
func taps(e *env) map[string]bool {
	out, _ := e.inNetns("ip", "-o", "link", "show")
	set := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "bgr-") {
			set[strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")] = true
		}
	}
	return set
}

// descendsFrom reports whether pid is one of pids or a descendant of one.
func descendsFrom(pid int, pids map[int]bool) bool {
	for pid > 1 {
		if pids[pid] {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		var state string
		if _, err := fmt.Sscan(rest, &state, &pid); err != nil {
			return false
		}
	}
	return false
}
