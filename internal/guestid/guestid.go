// Package guestid makes a warm template's clone a machine of its own,
// through the guest agent (package agent). A template is quiesced before
// it is saved (OpQuiesce: boot finished, udev's device events handled,
// disks synced, the saved random seed dropped, the root file system
// frozen); every clone then gets its own identity before banger reports
// it ready (OpIdentity): the kernel RNG reseeded from host bytes, the
// clock set from the host's, the root file system thawed, its own SSH
// host key, MAC and IP address from its own lease, default route, the
// neighbour table flushed and a gratuitous ARP sent; the agent answers
// then, and writes machine-id, hostname and nameserver while the host
// waits for sshd (Give). The daemon's clock keeper (package guestclock)
// refines the clock later. Nothing runs a program: each exec in a guest
// just restored under TCG costs a large part of a second.
package guestid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
)

// The agent operations.
const (
	OpQuiesce  = "quiesce"
	OpIdentity = "identity"
)

// QuiesceParams are OpQuiesce's parameters.
type QuiesceParams struct {
	// BootTimeoutSeconds bounds the wait for the guest's boot to finish
	// (systemd's is-system-running --wait); 0 means 120.
	BootTimeoutSeconds int `json:"boot_timeout_seconds,omitempty"`
}

// QuiesceResult is OpQuiesce's result.
type QuiesceResult struct {
	// SystemState is what systemd said once booted ("running",
	// "degraded"), "" without systemd.
	SystemState string `json:"system_state,omitempty"`
	// UdevSettled says udev's event queue was empty before the save
	// (udevadm settle), false where the guest has no udevadm.
	UdevSettled bool `json:"udev_settled,omitempty"`
}

// IdentityParams are OpIdentity's parameters: who the clone is.
type IdentityParams struct {
	Hostname  string `json:"hostname"`
	MachineID string `json:"machine_id"` // 32 lower-case hex digits
	// MAC, Address (ADDR/PREFIX), Gateway and DNS are its network; DNS
	// and Gateway may be empty.
	MAC     string `json:"mac"`
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
	DNS     string `json:"dns,omitempty"`
	// HostKey and HostKeyPub are its SSH host key (ed25519, OpenSSH
	// private key format and its authorized_keys line).
	HostKey    string `json:"host_key"`
	HostKeyPub string `json:"host_key_pub"`
	// Entropy is host randomness mixed into the kernel RNG (at least 32
	// bytes), after which the kernel reseeds.
	Entropy []byte `json:"entropy"`
	// HostTimeNanos is the host's wall clock (Unix nanoseconds) when it
	// sent the request; the guest sets its clock to it (off by the
	// request's transit time, a few milliseconds, which the daemon's clock
	// keeper corrects later). 0 leaves the clock alone.
	HostTimeNanos int64 `json:"host_time_ns,omitempty"`
}

// IdentityResult is OpIdentity's result. The guest answers as soon as
// the clone is reachable: its RNG reseeded, clock set, host key in place
// (sshd restarted with it where needed), MAC, address, route and
// neighbours set. When More is set (every agent since the answer came
// early), the rest (machine-id, hostname, resolver) is being written
// meanwhile, and the stream then carries one IdentityDone line; an agent
// from before answers only once everything is done, without More.
type IdentityResult struct {
	Interface string `json:"interface"`
	// SSHReloaded says sshd restarted to read its new host key (OpenSSH
	// 9.8 and later; an earlier sshd reads it for each connection), and
	// listened again with it before this answer.
	SSHReloaded bool `json:"ssh_reloaded"`
	// ClockSet says the clock was set from HostTimeNanos.
	ClockSet bool `json:"clock_set,omitempty"`
	// More says an IdentityDone line follows on the stream.
	More bool `json:"more,omitempty"`
	// Steps is how long each part took in the guest, in order.
	Steps []Step `json:"steps,omitempty"`
}

// IdentityDone is the last line of an OpIdentity stream whose result had
// More: the identity is complete, or Error says what failed.
type IdentityDone struct {
	Error string `json:"error,omitempty"`
	Steps []Step `json:"steps,omitempty"`
}

// Step is one timed part of an operation in the guest.
type Step struct {
	Name   string `json:"name"`
	Micros int64  `json:"us"`
}

// stepTimer collects Steps.
type stepTimer struct {
	steps []Step
	last  time.Time
}

func newStepTimer() *stepTimer { return &stepTimer{last: time.Now()} }

// done ends the step name, begun when the previous one ended.
func (t *stepTimer) done(name string) {
	now := time.Now()
	t.steps = append(t.steps, Step{Name: name, Micros: now.Sub(t.last).Microseconds()})
	t.last = now
}

// take returns the steps done since the last take.
func (t *stepTimer) take() []Step {
	s := t.steps
	t.steps = nil
	return s
}

var (
	machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
	hostnameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Check validates p; the guest refuses what it does not pass.
func (p IdentityParams) Check() error {
	var errs []error
	if !hostnameRE.MatchString(p.Hostname) {
		errs = append(errs, fmt.Errorf("hostname %q: want a DNS label", p.Hostname))
	}
	if !machineIDRE.MatchString(p.MachineID) {
		errs = append(errs, fmt.Errorf("machine id %q: want 32 lower-case hex digits", p.MachineID))
	}
	if hw, err := net.ParseMAC(p.MAC); err != nil || len(hw) != 6 {
		errs = append(errs, fmt.Errorf("mac %q: want xx:xx:xx:xx:xx:xx", p.MAC))
	}
	if _, err := netip.ParsePrefix(p.Address); err != nil {
		errs = append(errs, fmt.Errorf("address %q: want ADDR/PREFIX", p.Address))
	}
	for what, a := range map[string]string{"gateway": p.Gateway, "dns": p.DNS} {
		if a == "" {
			continue
		}
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want an address", what, a))
		}
	}
	if !strings.Contains(p.HostKey, "OPENSSH PRIVATE KEY") || !strings.HasPrefix(p.HostKeyPub, "ssh-") {
		errs = append(errs, errors.New("host key: want an OpenSSH private key and its public line"))
	}
	if len(p.Entropy) < 32 || len(p.Entropy) > 4096 {
		errs = append(errs, fmt.Errorf("entropy: %d bytes, want 32 to 4096", len(p.Entropy)))
	}
	if p.HostTimeNanos < 0 {
		errs = append(errs, fmt.Errorf("host time %d: want Unix nanoseconds", p.HostTimeNanos))
	}
	return errors.Join(errs...)
}

// The file system freeze ioctls (linux/fs.h), absent from x/sys/unix.
const (
	fifreeze = 0xC0045877
	fithaw   = 0xC0045878
)

// HandleQuiesce is the guest agent's handler for OpQuiesce. It waits for
// the boot to finish (systemd's jobs, then udev's event queue), syncs,
// drops the saved random seed (each clone gets fresh randomness instead)
// and freezes the root file system, so that the disk the host copies is
// consistent and stays so until a clone's OpIdentity thaws it.
func HandleQuiesce(ctx context.Context, st *agent.Stream) error {
	var p QuiesceParams
	if err := st.Decode(&p); err != nil {
		return err
	}
	var res QuiesceResult
	timeout := time.Duration(p.BootTimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = 120 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		out, _ := exec.CommandContext(wctx, "systemctl", "is-system-running", "--wait").Output()
		res.SystemState = strings.TrimSpace(string(out))
		if wctx.Err() != nil {
			return agent.Errorf(agent.CodeFailed, "the guest's boot did not finish within %s (systemd says %q)", timeout, res.SystemState)
		}
	}
	// systemd's boot is over once udev has been told of every device,
	// not once it has handled them: the rest of that work would run
	// again in every clone, beside its identity and its first SSH
	// session (measured: four udev workers busy in each new clone).
	if path, err := exec.LookPath("udevadm"); err == nil {
		deadline, _ := wctx.Deadline()
		secs := max(1, int(time.Until(deadline).Seconds()))
		if out, err := exec.CommandContext(wctx, path, "settle", fmt.Sprintf("--timeout=%d", secs)).CombinedOutput(); err != nil {
			return agent.Errorf(agent.CodeFailed, "udev did not finish handling the guest's devices within %s: %v %s", timeout, err, strings.TrimSpace(string(out)))
		}
		res.UdevSettled = true
	}
	for _, f := range []string{"/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	unix.Sync()
	if err := freeze("/", fifreeze); err != nil {
		return fmt.Errorf("freeze the root file system: %w", err)
	}
	return st.Accept(res)
}

// freeze runs the freeze or thaw ioctl on the file system of dir.
func freeze(dir string, req uint) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.IoctlSetInt(fd, req, 0)
}

// HandleIdentity is the guest agent's handler for OpIdentity (see the
// package doc). It is idempotent: a clone whose file system is not frozen
// is thawed without complaint.
//
// It answers as soon as the clone is reachable, and writes the rest while
// the host connects (see IdentityResult.More): sshd's first answer costs a
// clone a large part of a second under TCG, which then overlaps the rest.
func HandleIdentity(ctx context.Context, st *agent.Stream) error {
	var p IdentityParams
	if err := st.Decode(&p); err != nil {
		return err
	}
	if err := p.Check(); err != nil {
		return agent.Errorf(agent.CodeInvalid, "%s: %v", OpIdentity, err)
	}
	return identify(ctx, st, p, guestSystem)
}

// system is what OpIdentity changes in the guest, a function per part,
// so that tests can run identify without a guest.
type system struct {
	thaw   func() error
	reseed func(entropy []byte) error
	// setClock sets the wall clock to Unix nanoseconds.
	setClock func(ns int64) error
	// setHostKey installs the host key; it returns the pid of an sshd it
	// told to restart (0: none), for waitSSHD.
	setHostKey func(priv, pub string) (int, error)
	waitSSHD   func(ctx context.Context, pid int) error
	// setNetwork gives the network device MAC, address, route; flushes
	// its neighbours and announces the address. It returns the device.
	setNetwork  func(p IdentityParams, t *stepTimer) (string, error)
	writeFile   func(path string, data []byte, mode os.FileMode) error
	setHostname func(name string) error
}

// guestSystem is the system of the guest the agent runs in.
var guestSystem = system{
	thaw: func() error {
		if err := freeze("/", fithaw); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("thaw the root file system: %w", err)
		}
		return nil
	},
	reseed: reseed,
	setClock: func(ns int64) error {
		ts := unix.NsecToTimespec(ns)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return fmt.Errorf("set the clock: %w", err)
		}
		return nil
	},
	setHostKey: setHostKey,
	waitSSHD: func(ctx context.Context, pid int) error {
		return waitRestarted(ctx, sshdPIDFile, pid, sshdRestartTimeout)
	},
	setNetwork:  setNetwork,
	writeFile:   writeFile,
	setHostname: setHostname,
}

// identify is HandleIdentity on sys. In order: RNG, clock, thaw, host
// key (and the restart of an sshd that loads it once), network, then the
// answer; then machine-id, hostname and resolver, then the IdentityDone
// line. The address comes up only after the RNG is reseeded and the host
// key is in place: from then on the host may connect, and sshd must
// present the clone's own key, with randomness of its own.
func identify(ctx context.Context, st *agent.Stream, p IdentityParams, sys system) error {
	start := time.Now()
	t := newStepTimer()
	res := IdentityResult{More: true}
	if err := sys.reseed(p.Entropy); err != nil {
		return err
	}
	t.done("reseed")
	if p.HostTimeNanos > 0 {
		if err := sys.setClock(p.HostTimeNanos); err != nil {
			return err
		}
		res.ClockSet = true
		t.done("clock")
	}
	if err := sys.thaw(); err != nil {
		return err
	}
	t.done("thaw")
	sshd, err := sys.setHostKey(p.HostKey, p.HostKeyPub)
	if err != nil {
		return err
	}
	t.done("host key")
	if sshd != 0 {
		if err := sys.waitSSHD(ctx, sshd); err != nil {
			return err
		}
		res.SSHReloaded = true
		t.done("sshd restart")
	}
	if res.Interface, err = sys.setNetwork(p, t); err != nil {
		return err
	}
	res.Steps = append(t.take(), Step{Name: "reachable (since the request)", Micros: time.Since(start).Microseconds()})
	if err := st.Accept(res); err != nil {
		return err
	}
	var done IdentityDone
	if err := rest(p, sys, t); err != nil {
		done.Error = err.Error()
	}
	done.Steps = append(t.take(), Step{Name: "done (since the request)", Micros: time.Since(start).Microseconds()})
	return json.NewEncoder(st).Encode(done)
}

// rest is what identify writes after its answer.
func rest(p IdentityParams, sys system, t *stepTimer) error {
	if err := sys.writeFile("/etc/machine-id", []byte(p.MachineID+"\n"), 0o444); err != nil {
		return err
	}
	t.done("machine-id")
	if err := sys.setHostname(p.Hostname); err != nil {
		return err
	}
	t.done("hostname")
	if p.DNS != "" {
		// writeFile renames over the path: a symlink there (to a
		// resolver stub) is replaced, not followed.
		if err := sys.writeFile("/etc/resolv.conf", []byte("nameserver "+p.DNS+"\n"), 0o644); err != nil {
			return err
		}
		t.done("dns")
	}
	return nil
}

// reseed mixes b into the kernel's entropy pool (credited) and makes the
// kernel reseed its CRNG from it at once.
func reseed(b []byte) error {
	fd, err := unix.Open("/dev/urandom", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("reseed the kernel rng: %w", err)
	}
	defer unix.Close(fd)
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b))
	putInt32(info[0:], int32(8*len(b)))
	putInt32(info[4:], int32(len(b)))
	copy(info[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("reseed the kernel rng: RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseed the kernel rng: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

func putInt32(b []byte, v int32) {
	// native endian: this agent runs on little-endian guests only (amd64).
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// writeFile replaces path with data (a temporary file renamed over it).
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// setHostname sets the kernel's hostname, /etc/hostname and the
// 127.0.1.1 line of /etc/hosts, as banger-net does at boot.
func setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := writeFile("/etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read /etc/hosts: %w", err)
	}
	return writeFile("/etc/hosts", HostsWithName(hosts, name), 0o644)
}

// HostsWithName returns hosts with its 127.0.1.1 line naming name (added
// when there is none).
func HostsWithName(hosts []byte, name string) []byte {
	var out bytes.Buffer
	found := false
	for _, line := range strings.SplitAfter(string(hosts), "\n") {
		if line == "" {
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && f[0] == "127.0.1.1" {
			if found {
				continue
			}
			found = true
			line = "127.0.1.1\t" + name + "\n"
		}
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		out.WriteString(line)
	}
	if !found {
		out.WriteString("127.0.1.1\t" + name + "\n")
	}
	return out.Bytes()
}

// sshdSessionPaths are where OpenSSH 9.8 and later install sshd-session,
// the program each connection runs.
var sshdSessionPaths = []string{"/usr/lib/openssh/sshd-session", "/usr/libexec/openssh/sshd-session", "/usr/libexec/sshd-session", "/usr/lib/ssh/sshd-session"}

// sshdPIDFile is where sshd writes its listener's pid (PidFile; Debian's
// and OpenSSH's default), once it listens with its host keys loaded.
const sshdPIDFile = "/run/sshd.pid"

// sshdRestartTimeout bounds the wait for sshd's restart after SIGHUP
// (under TCG an exec of sshd takes a large part of a second).
const sshdRestartTimeout = 30 * time.Second

// setHostKey installs the ed25519 host key. An sshd before OpenSSH 9.8
// re-executes itself for each connection and reads its host keys then, so
// the next connection gets the new key without a reload (measured: the
// reload, a re-execution of sshd, was the slowest part of a clone's start
// under TCG). A later sshd (sshd-session) loads them once, at its start:
// it is told to read them again (SIGHUP, see restartListener), and
// setHostKey returns its pid, for waitRestarted; 0 when no sshd was told.
func setHostKey(priv, pub string) (int, error) {
	if err := writeFile("/etc/ssh/ssh_host_ed25519_key", []byte(priv), 0o600); err != nil {
		return 0, err
	}
	if err := writeFile("/etc/ssh/ssh_host_ed25519_key.pub", []byte(strings.TrimSpace(pub)+"\n"), 0o644); err != nil {
		return 0, err
	}
	if !sshdLoadsKeysOnce() {
		return 0, nil
	}
	return restartListener(sshdPIDFile)
}

// restartListener tells the process whose pid pidFile holds to restart
// (SIGHUP) and removes pidFile first, so that its return tells that the
// restart is done (see waitRestarted). It returns the pid, or 0 when no
// such process runs (it reads the key when it starts).
//
// sshd's listener restarts on SIGHUP by re-executing itself: it removes
// its pid file, closes its listening sockets and execs sshd, which loads
// the host keys, listens and writes the pid file again. Until then a
// connection is refused, or served with the old key by a listener that
// has not yet seen the signal: the clone is not ready before.
func restartListener(pidFile string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid < 2 || syscall.Kill(pid, 0) != nil {
		return 0, nil // a stale pid file: no sshd runs
	}
	if err := os.Remove(pidFile); err != nil {
		return 0, fmt.Errorf("sshd restart: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return 0, fmt.Errorf("sshd restart: signal pid %d: %w", pid, err)
	}
	return pid, nil
}

// waitRestarted waits until process pid, told to restart by
// restartListener, has written pidFile again, naming itself. It fails
// when the process ends or timeout passes first.
func waitRestarted(ctx context.Context, pidFile string, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
			return nil
		}
		if err := syscall.Kill(pid, 0); err != nil {
			return fmt.Errorf("sshd (pid %d) ended instead of restarting to read its new host key: see its log (journalctl -u ssh)", pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd (pid %d) did not restart within %s to read its new host key: see its log (journalctl -u ssh)", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for sshd's restart: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sshdLoadsKeysOnce says the guest's sshd is OpenSSH 9.8 or later, whose
// listener loads the host keys and hands them to each connection's
// sshd-session.
func sshdLoadsKeysOnce() bool {
	for _, p := range sshdSessionPaths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// setNetwork gives the guest's network device (the first with a device
// behind it) p's MAC, address and default route, flushes its neighbours
// and announces the address with a gratuitous ARP. It returns the
// device's name.
func setNetwork(p IdentityParams, t *stepTimer) (string, error) {
	link, err := nic()
	if err != nil {
		return "", err
	}
	name := link.Attrs().Name
	fail := func(what string, err error) (string, error) {
		return name, fmt.Errorf("%s: %s: %w", name, what, err)
	}
	hw, _ := net.ParseMAC(p.MAC)
	if !bytes.Equal(link.Attrs().HardwareAddr, hw) {
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			// Some drivers take a new address only while down.
			if err := netlink.LinkSetDown(link); err != nil {
				return fail("set link down", err)
			}
			if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
				return fail("set mac", err)
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail("set link up", err)
	}
	t.done("network: mac")
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fail("list addresses", err)
	}
	for _, a := range addrs {
		if err := netlink.AddrDel(link, &a); err != nil {
			return fail("remove address "+a.IPNet.String(), err)
		}
	}
	addr, err := netlink.ParseAddr(p.Address)
	if err != nil {
		return fail("parse address", err)
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fail("add address", err)
	}
	if p.Gateway != "" {
		_, all, _ := net.ParseCIDR("0.0.0.0/0")
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: all, Gw: net.ParseIP(p.Gateway)}
		if err := netlink.RouteReplace(r); err != nil {
			return fail("set default route", err)
		}
	}
	t.done("network: address and route")
	neigh, _ := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	for _, n := range neigh {
		netlink.NeighDel(&n) // best effort: an entry may go by itself meanwhile
	}
	t.done("network: neighbours")
	if err := sendGARP(link.Attrs().Index, hw, addr.IP.To4()); err != nil {
		return fail("gratuitous arp", err)
	}
	t.done("network: arp")
	return name, nil
}

// nic is the first network link with a device behind it (virtio-net), as
// banger-net picks it.
func nic() (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list network links: %w", err)
	}
	for _, l := range links {
		n := l.Attrs().Name
		if n == "lo" {
			continue
		}
		if _, err := os.Stat("/sys/class/net/" + n + "/device"); err == nil {
			return l, nil
		}
	}
	return nil, errors.New("no network device in the guest")
}

// GARP is a gratuitous ARP request frame announcing ip at hw.
func GARP(hw net.HardwareAddr, ip net.IP) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, hw...)
	f = append(f, 0x08, 0x06)                // ARP
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
	f = append(f, hw...)
	f = append(f, ip.To4()...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	return append(f, ip.To4()...)
}

func sendGARP(ifindex int, hw net.HardwareAddr, ip net.IP) error {
	proto := uint16(unix.ETH_P_ARP)
	proto = proto<<8 | proto>>8 // network byte order
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: proto, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(fd, GARP(hw, ip), 0, to)
}

// Give gives a clone its identity through sess (OpIdentity, the host's
// side). reachable is called as soon as the guest answers that the clone
// is reachable (see IdentityResult), while the guest writes the rest; Give
// returns once the identity is complete, with the steps of both parts.
// ctx bounds the whole call.
func Give(ctx context.Context, sess *agent.Session, p IdentityParams, reachable func()) (IdentityResult, error) {
	var res IdentityResult
	c, err := sess.Open(ctx, OpIdentity, p, &res)
	if err != nil {
		return res, err
	}
	defer c.Close()
	reachable()
	if !res.More {
		return res, nil // an agent from before the early answer: all done
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var done IdentityDone
	if err := json.NewDecoder(c).Decode(&done); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return res, fmt.Errorf("%s: read the end of the identity from the guest agent: %w", OpIdentity, err)
	}
	res.Steps = append(res.Steps, done.Steps...)
	if done.Error != "" {
		return res, fmt.Errorf("%s: %s", OpIdentity, done.Error)
	}
	return res, nil
}
