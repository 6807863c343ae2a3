// Package guestid makes a warm template's clone a machine of its own,
// through the guest agent (package agent). A template is quiesced before
// it is saved (OpQuiesce: boot finished, udev's device events handled,
// disks synced, the saved random seed dropped, what the identity needs
// prepared); every clone then gets its own identity before banger reports
// it ready (OpIdentity): the kernel RNG reseeded from host bytes, the
// clock set from the host's, its own SSH host key, MAC and IP address
// from its own lease, default route, the neighbour table flushed and a
// gratuitous ARP sent; the agent answers then, and writes machine-id,
// hostname and nameserver while the host waits for sshd (Give). The
// daemon's clock keeper (package guestclock) refines the clock later.
// Nothing runs a program: each exec in a guest just restored under TCG
// costs a large part of a second.
//
// The root file system is not frozen: the host saves the template with
// its vCPUs stopped and its disk's writes done, so a clone's memory and
// disk agree as they did in the template, as a VM paused and resumed;
// and a clone booted cold from its disk (vm restart) finds the file
// system as after a power cut, which its journal mends. A freeze bought
// nothing more, and its thaw cost each clone 22-27 ms (a synchronous
// write of the superblock).
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

// HandleQuiesce is the guest agent's handler for OpQuiesce. It waits for
// the boot to finish (systemd's jobs, then udev's event queue), drops the
// saved random seed (each clone gets fresh randomness instead), prepares
// the identity (see prepared) and syncs, so that the disk holds what the
// guest wrote and a clone has no dirty pages to write again.
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
	prepare()
	unix.Sync()
	return st.Accept(res)
}

// prepared is what a template's quiesce learns of its guest for its
// clones' identities. A clone resumes the template's agent process, so it
// finds prepared as the quiesce left it, in a guest with the template's
// image and devices, and skips learning it again: each lookup is code that
// TCG translates anew in every clone (measured: 30-40 ms to find the
// network device, 8-10 ms to look for sshd-session, 30 ms more to decode
// the first request of a type), or opens sockets: closing the packet
// socket of the gratuitous ARP waits for an RCU grace period
// (synchronize_net), 35-45 ms. ok is false in an agent that quiesced no
// template (a cold-booted VM's): identify then looks everything up, and
// opens what it needs.
var prepared struct {
	ok                bool
	sshdLoadsKeysOnce bool
	// nic is the network device as it was, nicErr why there was none.
	nic    netlink.Link
	nicErr error
	// nl is a route netlink socket (nil when it could not be opened).
	nl *netlink.Handle
	// arp is a send-only packet socket (-1 when it could not be opened).
	arp int
}

// prepare fills prepared, and runs the identity's decoding, checks and
// encodings once on a sample, so that a clone finds encoding/json's
// caches of their types built.
func prepare() {
	prepared.sshdLoadsKeysOnce = sshdLoadsKeysOnce()
	prepared.nic, prepared.nicErr = nic()
	if prepared.nl == nil {
		prepared.nl, _ = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if !prepared.ok {
		prepared.arp, _ = packetSocket()
	}
	sample := IdentityParams{
		Hostname: "sample", MachineID: strings.Repeat("0", 32), MAC: "02:00:00:00:00:01",
		Address: "192.0.2.2/24", Gateway: "192.0.2.1", DNS: "192.0.2.1",
		HostKey: "OPENSSH PRIVATE KEY", HostKeyPub: "ssh-ed25519 sample",
		Entropy: make([]byte, 32), HostTimeNanos: 1,
	}
	if b, err := json.Marshal(sample); err == nil {
		var p IdentityParams
		if json.Unmarshal(b, &p) == nil {
			_ = p.Check()
		}
	}
	_, _ = json.Marshal(IdentityResult{Steps: []Step{{}}})
	_, _ = json.Marshal(IdentityDone{Steps: []Step{{}}})
	prepared.ok = true
}

// HandleIdentity is the guest agent's handler for OpIdentity (see the
// package doc). It is idempotent: run again with the same params, it
// leaves the same identity.
//
// It answers as soon as the clone is reachable, and writes the rest while
// the host connects (see IdentityResult.More): sshd's first answer costs a
// clone a large part of a second under TCG, which then overlaps the rest.
func HandleIdentity(ctx context.Context, st *agent.Stream) error {
	t := newStepTimer()
	var p IdentityParams
	if err := st.Decode(&p); err != nil {
		return err
	}
	t.done("decode")
	if err := p.Check(); err != nil {
		return agent.Errorf(agent.CodeInvalid, "%s: %v", OpIdentity, err)
	}
	t.done("check")
	return identify(ctx, st, p, guestSystem, t)
}

// system is what OpIdentity changes in the guest, a function per part,
// so that tests can run identify without a guest.
type system struct {
	reseed func(entropy []byte) error
	// setClock sets the wall clock to Unix nanoseconds.
	setClock func(ns int64) error
	// setHostKey installs the host key; it returns the pid of an sshd it
	// told to restart (0: none), for waitSSHD.
	setHostKey func(priv, pub string) (int, error)
	waitSSHD   func(ctx context.Context, pid int) error
	// setNetwork gives the network device MAC, address and route, and
	// flushes its neighbours. It returns the device.
	setNetwork func(p IdentityParams, t *stepTimer) (netDevice, error)
	// announce sends a gratuitous ARP for p's address from dev.
	announce    func(dev netDevice, p IdentityParams) error
	writeFile   func(path string, data []byte, mode os.FileMode) error
	setHostname func(name string) error
}

// guestSystem is the system of the guest the agent runs in.
var guestSystem = system{
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
	setNetwork: setNetwork,
	announce: func(dev netDevice, p IdentityParams) error {
		hw, _ := net.ParseMAC(p.MAC)
		addr, _ := netip.ParsePrefix(p.Address)
		fd := prepared.arp
		if !prepared.ok || fd < 0 {
			var err error
			if fd, err = packetSocket(); err != nil {
				return fmt.Errorf("%s: gratuitous arp: %w", dev.Name, err)
			}
			// Its close waits for an RCU grace period: not here.
			defer func() { go unix.Close(fd) }()
		}
		if err := sendGARP(fd, dev.Index, hw, addr.Addr().AsSlice()); err != nil {
			return fmt.Errorf("%s: gratuitous arp: %w", dev.Name, err)
		}
		return nil
	},
	writeFile:   writeFile,
	setHostname: setHostname,
}

// identify is HandleIdentity on sys. In order: RNG, clock, host key (and
// the restart of an sshd that loads it once), network and a gratuitous
// ARP, then the answer; then machine-id, hostname and resolver, then the
// IdentityDone line. The address comes up only after the RNG is reseeded
// and the host key is in place: from then on the host may connect, and
// sshd must present the clone's own key, with randomness of its own. t
// has the steps before identify (decoding, checks).
func identify(ctx context.Context, st *agent.Stream, p IdentityParams, sys system, t *stepTimer) error {
	start := time.Now()
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
	dev, err := sys.setNetwork(p, t)
	if err != nil {
		return err
	}
	res.Interface = dev.Name
	if err := sys.announce(dev, p); err != nil {
		return err
	}
	t.done("network: arp")
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

// writeFile gives path the contents data and mode. An existing regular
// file is written in place: opened without following a symbolic link,
// written from its start and cut to data's length (its mode set when it
// differs). Under TCG a clone's first new file and rename in its root file
// system took 60-100 ms (ext4's inode, directory and journal paths, all
// translated anew), the first overwrite of a file a third of that, and
// what the identity writes before its answer (the host key) is in every
// template. A reader may see the file half written: nothing reads these
// files while a clone gets its identity (sshd's connections wait for the
// address, which comes after the key). Where path is missing, or is not a
// regular file (a symbolic link to a resolver stub is replaced, not
// followed), data goes to a temporary file renamed over path.
func writeFile(path string, data []byte, mode os.FileMode) error {
	err := overwrite(path, data, mode)
	if err == nil {
		return nil
	}
	if !errors.Is(err, errNotRegular) {
		return fmt.Errorf("write %s: %w", path, err)
	}
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

// errNotRegular is overwrite's answer for a path that is no existing
// regular file.
var errNotRegular = errors.New("not an existing regular file")

// overwrite writes data over the regular file at path, in place (see
// writeFile), or returns errNotRegular.
func overwrite(path string, data []byte, mode os.FileMode) error {
	// O_NONBLOCK: a FIFO without a reader fails at once (ENXIO).
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENXIO):
		return errNotRegular
	case err != nil:
		return err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errNotRegular
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if st.Size() != int64(len(data)) {
		if err := f.Truncate(int64(len(data))); err != nil {
			return err
		}
	}
	if st.Mode().Perm() != mode.Perm() {
		if err := f.Chmod(mode); err != nil {
			return err
		}
	}
	return f.Close()
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
	once := prepared.sshdLoadsKeysOnce
	if !prepared.ok {
		once = sshdLoadsKeysOnce()
	}
	if !once {
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

// netDevice is the guest's network device.
type netDevice struct {
	Name  string
	Index int
}

// setNetwork gives the guest's network device (the first with a device
// behind it) p's MAC, address and default route, and flushes its
// neighbours. The device is the one prepare found, when it ran. A device
// that is up already (banger-net brings a template's up) stays up: its
// MAC changes while it runs (starting the device, its queues and their
// buffers, took a clone 40-45 ms).
func setNetwork(p IdentityParams, t *stepTimer) (netDevice, error) {
	link, err, nl := prepared.nic, prepared.nicErr, prepared.nl
	if !prepared.ok {
		link, err = nic()
	}
	if err != nil {
		return netDevice{}, err
	}
	if nl == nil {
		if nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return netDevice{}, fmt.Errorf("open a netlink socket: %w", err)
		}
		defer nl.Close()
	}
	dev := netDevice{Name: link.Attrs().Name, Index: link.Attrs().Index}
	fail := func(what string, err error) (netDevice, error) {
		return dev, fmt.Errorf("%s: %s: %w", dev.Name, what, err)
	}
	hw, _ := net.ParseMAC(p.MAC)
	up := link.Attrs().Flags&net.FlagUp != 0
	if !bytes.Equal(link.Attrs().HardwareAddr, hw) {
		if err := nl.LinkSetHardwareAddr(link, hw); err != nil {
			// Some drivers take a new address only while down.
			if err := nl.LinkSetDown(link); err != nil {
				return fail("set link down", err)
			}
			up = false
			if err := nl.LinkSetHardwareAddr(link, hw); err != nil {
				return fail("set mac", err)
			}
		}
	}
	t.done("network: mac")
	if !up {
		if err := nl.LinkSetUp(link); err != nil {
			return fail("set link up", err)
		}
		t.done("network: up")
	}
	addrs, err := nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fail("list addresses", err)
	}
	for _, a := range addrs {
		if err := nl.AddrDel(link, &a); err != nil {
			return fail("remove address "+a.IPNet.String(), err)
		}
	}
	addr, err := netlink.ParseAddr(p.Address)
	if err != nil {
		return fail("parse address", err)
	}
	if err := nl.AddrReplace(link, addr); err != nil {
		return fail("add address", err)
	}
	if p.Gateway != "" {
		_, all, _ := net.ParseCIDR("0.0.0.0/0")
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: all, Gw: net.ParseIP(p.Gateway)}
		if err := nl.RouteReplace(r); err != nil {
			return fail("set default route", err)
		}
	}
	t.done("network: address and route")
	neigh, _ := nl.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	for _, n := range neigh {
		nl.NeighDel(&n) // best effort: an entry may go by itself meanwhile
	}
	t.done("network: neighbours")
	return dev, nil
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

// packetSocket opens a raw packet socket for sending only (protocol 0:
// the kernel delivers it no frame); on error the descriptor is -1.
func packetSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open a packet socket: %w", err)
	}
	return fd, nil
}

// sendGARP sends GARP(hw, ip) out of device ifindex through packet socket
// fd.
func sendGARP(fd, ifindex int, hw net.HardwareAddr, ip net.IP) error {
	proto := uint16(unix.ETH_P_ARP)
	proto = proto<<8 | proto>>8 // network byte order
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
