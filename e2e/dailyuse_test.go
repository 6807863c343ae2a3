package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/testhost"
)

// TestDailyUse checks what makes banger VMs pleasant to use every day, on
// two real VMs shared by every part: names (NAME.banger.internal from the
// host through bangerd's DNS server on the bridge address, and from
// another guest), `banger ssh-config` with plain OpenSSH, and that a
// removed VM's name stops resolving at once.
func TestDailyUse(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.debianImage(ctx)
	e.must(ctx, "daemon", "stop")
	e.enterNetns()
	logStep := stepLogger(t)

	shares := newShares(t, e)
	e.must(ctx, "vm", "create", "a", "--cpus", "1", "--memory", "512", "--publish", "18080:8080",
		"--mount", shares.rw+":/mnt/rw", "--mount", shares.ro+":/mnt/ro:ro")
	e.must(ctx, "vm", "create", "b", "--cpus", "1", "--memory", "512")
	logStep("create two VMs (a with --publish and two --mount)")
	a, b := e.vm(ctx, "a"), e.vm(ctx, "b")
	bridgeAddr := network.Gateway(netip.MustParsePrefix(e.daemonStatus(ctx).Subnet))

	t.Run("names", func(t *testing.T) {
		server := netip.AddrPortFrom(bridgeAddr, 53)
		for _, proto := range []string{"udp", "tcp"} {
			if got := lookupInNetns(t, e.netns, proto, server, "a.banger.internal."); got != a.IP {
				t.Errorf("%s query for a.banger.internal to %s: %q, want %s", proto, server, got, a.IP)
			}
		}
		if got := lookupInNetns(t, e.netns, "udp", server, "nope.banger.internal."); got != "NXDOMAIN" {
			t.Errorf("nope.banger.internal: %q, want NXDOMAIN", got)
		}
		// Inside a guest, through its resolver (banger.dns= is the bridge
		// address by default).
		out := e.must(ctx, "vm", "exec", "b", "--", "getent", "hosts", "a.banger.internal")
		if f := strings.Fields(out); len(f) < 2 || f[0] != a.IP {
			t.Errorf("getent hosts a.banger.internal in b: %q, want %s", out, a.IP)
		}
		out = e.must(ctx, "vm", "exec", "a", "--", "getent", "hosts", b.IP)
		if !strings.Contains(out, "b.banger.internal") {
			t.Errorf("getent hosts %s (PTR) in a: %q", b.IP, out)
		}
	})
	logStep("names")

	t.Run("ssh-config", func(t *testing.T) {
		cfg := filepath.Join(e.root, "ssh_config")
		text := e.must(ctx, "ssh-config")
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if path := strings.TrimSpace(e.must(ctx, "ssh-config", "--path")); mustRead(t, path) != text {
			t.Errorf("the file bangerd keeps (%s) differs from `banger ssh-config`", path)
		}
		for _, vm := range []string{"a", "b"} {
			out, err := e.inNetns("ssh", "-F", cfg, "-o", "BatchMode=yes", vm+".banger.internal", "cat", "/etc/hostname")
			if err != nil || strings.TrimSpace(out) != vm {
				t.Errorf("ssh -F %s %s.banger.internal: %v: %q", cfg, vm, err, out)
			}
		}
	})
	logStep("ssh-config")

	t.Run("mount", func(t *testing.T) { mountChecks(ctx, t, e, shares) })
	logStep("mount")

	t.Run("forward", func(t *testing.T) { forwardChecks(ctx, t, e, logStep) })

	// The shares are back after the restart and the daemon SIGKILL.
	if out := e.must(ctx, "vm", "exec", "a", "--", "cat", "/mnt/rw/from-guest"); out != "written in the guest\n" {
		t.Errorf("/mnt/rw/from-guest after vm restart: %q", out)
	}

	// A removed VM's name is gone at once, and so is its ssh-config block.
	e.must(ctx, "vm", "rm", "--force", "b")
	if got := lookupInNetns(t, e.netns, "udp", netip.AddrPortFrom(bridgeAddr, 53), "b.banger.internal."); got != "NXDOMAIN" {
		t.Errorf("b.banger.internal after vm rm: %q, want NXDOMAIN", got)
	}
	if strings.Contains(e.must(ctx, "ssh-config"), "b.banger.internal") {
		t.Errorf("ssh-config still names b after vm rm")
	}
	logStep("vm rm b, its name gone")
	e.must(ctx, "vm", "rm", "--force", "a")
	// Its virtiofsd processes ended with its QEMU.
	waitFor(t, 10*time.Second, "the virtiofsd processes of a to exit", func() bool { return len(virtiofsdsOf(shareUID)) == 0 })
	logStep("vm rm a, its virtiofsd gone")
}

// shareUID and shareGID own the e2e test's shared folders: a user other
// than the daemon's (root), whom the guest's root is in the share.
const shareUID, shareGID = 4321, 4322

// shares are the host folders VM a shares: rw at /mnt/rw, ro at /mnt/ro
// (read-only), both owned by shareUID with a file from-host in each.
type shares struct{ rw, ro string }

func newShares(t *testing.T, e *env) shares {
	t.Helper()
	s := shares{rw: filepath.Join(e.root, "share-rw"), ro: filepath.Join(e.root, "share-ro")}
	for _, dir := range []string{s.rw, s.ro} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "from-host")
		if err := os.WriteFile(f, []byte("written on the host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dir, f} {
			if err := os.Chown(p, shareUID, shareGID); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// mountChecks: what either side writes the other reads, the guest's files
// belong to the folder's owner on the host, the read-only share refuses
// writes in the guest, and a running VM's shares cannot change.
func mountChecks(ctx context.Context, t *testing.T, e *env, s shares) {
	for _, dir := range []string{"/mnt/rw", "/mnt/ro"} {
		if out := e.must(ctx, "vm", "exec", "a", "--", "cat", dir+"/from-host"); out != "written on the host\n" {
			t.Errorf("%s/from-host in the guest: %q", dir, out)
		}
	}
	e.must(ctx, "vm", "exec", "a", "--", "sh", "-c", "echo written in the guest > /mnt/rw/from-guest")
	f := filepath.Join(s.rw, "from-guest")
	if got := mustRead(t, f); got != "written in the guest\n" {
		t.Errorf("the guest's file on the host: %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != shareUID || st.Gid != shareGID {
		t.Errorf("the guest's file belongs to %d:%d on the host, want the folder's owner %d:%d", st.Uid, st.Gid, shareUID, shareGID)
	}
	if err := os.WriteFile(filepath.Join(s.rw, "later"), []byte("later\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the guest to see a file the host wrote after the mount", func() bool {
		return e.banger(ctx, "vm", "exec", "a", "--", "cat", "/mnt/rw/later").stdout == "later\n"
	})
	r := e.banger(ctx, "vm", "exec", "a", "--", "sh", "-c", "echo x > /mnt/ro/x")
	if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("a write to the read-only share: exit %d, %q; want Read-only file system", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(s.ro, "x")); !os.IsNotExist(err) {
		t.Errorf("the refused write reached the host: %v", err)
	}
	if v := e.vm(ctx, "a"); len(v.Mounts) != 2 || v.Mounts[1].Spec != s.ro+":/mnt/ro:ro" {
		t.Errorf("vm show a: mounts %+v", v.Mounts)
	}
	if msg := e.fails(ctx, "vm", "mount", "a", s.rw+":/mnt/other"); !strings.Contains(msg, "stop it first") {
		t.Errorf("vm mount of a running VM: %q", msg)
	}
	if len(virtiofsdsOf(shareUID)) != 2 {
		t.Errorf("virtiofsd processes running as the folders' owner: %v, want 2", virtiofsdsOf(shareUID))
	}
}

// virtiofsdsOf returns the pids of the virtiofsd processes that run as
// uid, one per share: each forks a child to be PID 1 of its own PID
// namespace, which is not counted.
func virtiofsdsOf(uid int) []int {
	ppid := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/status")
		st := string(b)
		if err != nil || !strings.Contains(st, "Name:\tvirtiofsd\n") || strings.Contains(st, "State:\tZ") ||
			!strings.Contains(st, "\nUid:\t"+strconv.Itoa(uid)+"\t") {
			continue
		}
		_, rest, _ := strings.Cut(st, "\nPPid:\t")
		p, _ := strconv.Atoi(strings.Fields(rest + " 0")[0])
		ppid[pid] = p
	}
	var pids []int
	for pid, p := range ppid {
		if _, child := ppid[p]; !child {
			pids = append(pids, pid)
		}
	}
	return pids
}

// lookupInNetns asks the DNS server at server, from inside the network
// namespace ns over proto, for the A record of name: the address, or the
// rcode's name when there is none.
func lookupInNetns(t *testing.T, ns, proto string, server netip.AddrPort, name string) string {
	t.Helper()
	var r *dns.Msg
	err := testhost.InNamedNetns(ns, func() error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Net: proto, Timeout: 5 * time.Second}
		var err error
		r, _, err = c.Exchange(m, server.String())
		return err
	})
	if err != nil {
		t.Fatalf("%s query for %s to %s: %v", proto, name, server, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return dns.RcodeToString[r.Rcode]
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Guest services for the forward checks, bound to the guest's 127.0.0.1
// only, run as transient systemd units (they outlive the exec): a TCP
// server that greets each connection with the guest's hostname, and a UDP
// server that answers each datagram with it upper-cased. Perl's core
// sockets: perl-base is in every Debian image.
const (
	tcpGreeter = `use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!"; ` +
		`chomp(my $h = ` + "`hostname`" + `); while (my $c = $s->accept) { print $c "hello from $h\n"; close $c }`
	udpUpper = `use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 9090, Proto => "udp") or die "bind: $!"; ` +
		`while (1) { my $from = $s->recv(my $m, 65535); $s->send(uc $m, 0, $from) }`
)

// startGuestServers starts the guest services in VM name and waits until
// they listen.
func startGuestServers(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	e.must(ctx, "vm", "exec", name, "--", "systemd-run", "--unit=bgr-tcp", "perl", "-e", tcpGreeter)
	e.must(ctx, "vm", "exec", name, "--", "systemd-run", "--unit=bgr-udp", "perl", "-e", udpUpper)
	waitFor(t, 2*time.Minute, "the guest servers to listen", func() bool {
		out := e.banger(ctx, "vm", "exec", name, "--", "sh", "-c", "ss -Hlnt 'sport = :8080'; ss -Hlnu 'sport = :9090'").stdout
		return strings.Count(out, "127.0.0.1:") == 2
	})
}

// forwardChecks: a guest server bound to 127.0.0.1 answers on the host
// port (TCP from vm create --publish, UDP from vm forward), again after
// vm restart and after a daemon SIGKILL; a taken host port is refused and
// leaves nothing; --rm closes the port.
func forwardChecks(ctx context.Context, t *testing.T, e *env, logStep func(string)) {
	tcp := netip.MustParseAddrPort("127.0.0.1:18080")
	udp := netip.MustParseAddrPort("127.0.0.1:18081")
	startGuestServers(ctx, t, e, "a")
	if got := tcpGreeting(t, e, tcp); got != "hello from a" {
		t.Fatalf("TCP through the forward from --publish: %q", got)
	}
	e.must(ctx, "vm", "forward", "a", "18081:9090/udp")
	if got := udpAnswer(t, e, udp, "ping"); got != "PING" {
		t.Fatalf("UDP through the forward: %q", got)
	}
	out := e.must(ctx, "vm", "forward", "a")
	for _, want := range []string{"127.0.0.1:18080:8080/tcp (listening)", "127.0.0.1:18081:9090/udp (listening)"} {
		if !strings.Contains(out, want) {
			t.Errorf("vm forward a: %q lacks %q", out, want)
		}
	}
	logStep("forward: TCP (--publish) and UDP to guest 127.0.0.1")

	// Taken host ports: by another VM's forward, and by a host listener.
	if msg := e.fails(ctx, "vm", "forward", "b", "18080:80"); !strings.Contains(msg, "forwarded already") || !strings.Contains(msg, `"a"`) {
		t.Errorf("a host port a's forward holds: %q", msg)
	}
	listenInNetns(t, e.netns, netip.MustParseAddrPort("127.0.0.1:18090"))
	if msg := e.fails(ctx, "vm", "forward", "b", "18090:80"); !strings.Contains(msg, "taken") {
		t.Errorf("a host port a host listener holds: %q", msg)
	}
	if msg := e.fails(ctx, "vm", "forward", "b", "18090:80:9"); !strings.Contains(msg, "HOST_PORT:GUEST_PORT") {
		t.Errorf("a bad spec: %q", msg)
	}
	if v := e.vm(ctx, "b"); len(v.Forwards) != 0 {
		t.Errorf("refused forwards left on b: %+v", v.Forwards)
	}

	e.must(ctx, "vm", "restart", "a")
	logStep("vm restart a")
	startGuestServers(ctx, t, e, "a")
	if got := tcpGreeting(t, e, tcp); got != "hello from a" {
		t.Fatalf("TCP after vm restart: %q", got)
	}
	if got := udpAnswer(t, e, udp, "again"); got != "AGAIN" {
		t.Fatalf("UDP after vm restart: %q", got)
	}
	logStep("forwards after vm restart")

	st := e.daemonStatus(ctx)
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "daemon to die", func() bool { return syscall.Kill(st.PID, 0) != nil })
	e.must(ctx, "daemon", "start")
	if got := tcpGreeting(t, e, tcp); got != "hello from a" {
		t.Fatalf("TCP after a daemon SIGKILL: %q", got)
	}
	if got := udpAnswer(t, e, udp, "still"); got != "STILL" {
		t.Fatalf("UDP after a daemon SIGKILL: %q", got)
	}
	logStep("forwards after a daemon SIGKILL")

	e.must(ctx, "vm", "forward", "--rm", "a", "18080:8080")
	err := testhost.InNamedNetns(e.netns, func() error {
		c, err := net.DialTimeout("tcp", tcp.String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("the host port still answers after vm forward --rm")
	}
	if v := e.vm(ctx, "a"); len(v.Forwards) != 1 || v.Forwards[0].Spec != "127.0.0.1:18081:9090/udp" {
		t.Errorf("forwards of a after --rm: %+v", v.Forwards)
	}
}

// tcpGreeting connects to addr in the test namespace and returns the
// first line it reads.
func tcpGreeting(t *testing.T, e *env, addr netip.AddrPort) string {
	t.Helper()
	var line string
	err := testhost.InNamedNetns(e.netns, func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// udpAnswer sends msg to addr from the test namespace and returns the
// answer (retrying: the first datagram of a flow opens its stream).
func udpAnswer(t *testing.T, e *env, addr netip.AddrPort, msg string) string {
	t.Helper()
	var got string
	err := testhost.InNamedNetns(e.netns, func() error {
		c, err := net.Dial("udp", addr.String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for range 5 {
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err == nil {
				got = string(buf[:n])
				return nil
			}
		}
		return fmt.Errorf("no answer to 5 datagrams")
	})
	if err != nil {
		t.Fatalf("udp %s: %v", addr, err)
	}
	return got
}
