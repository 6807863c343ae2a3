package fcsim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// QEMUGuest boots the configured microVM for real, under QEMU's microvm
// machine with TCG: the kernel, initrd and command line Firecracker would
// boot, its drives and TAP devices as the descriptors the simulator opened
// (QEMU opens nothing by path), the serial console copied to where
// Firecracker writes it. The hybrid vsock is simulated for the guest agent
// only: QEMU has no user-space vsock (and this host no vhost-vsock), so
// the agent's port (agent.Port) is bridged to the agent's virtio-serial
// port, which banger's agent serves as well; the guest "listens" on it
// while the agent holds the port open (QEMU's VSERPORT_CHANGE events). The
// port carries one stream at a time: a new host connection replaces the
// previous one, whose bytes the session layer's sync then discards.
// Connections from the guest to the host (<uds_path>_<port>) are not
// simulated. ctrl-alt-del is delivered as an ACPI power button press (the
// microvm machine has no i8042), after which the guest powers off and QEMU
// exits, as Firecracker exits when a reboot=k guest resets. The TSC hint a
// TCG guest needs (qemu.TCGKernelArgs) is appended to the command line.
//
// QEMU runs as a child of the simulator, or of the launcher the jailer
// simulator left outside the jail (see Launcher), and dies with it
// (PDEATHSIG), so killing the simulator kills the guest, as killing
// Firecracker does.
type QEMUGuest struct {
	// Binary is the QEMU binary (qemu-system-x86_64): a path, or a bare
	// name the launcher finds (see FindQEMU).
	Binary string
	// Launcher starts QEMU; nil means LocalLauncher.
	Launcher Launcher
	// Log receives QEMU's own output and the guest's messages about the
	// simulation; nil discards.
	Log io.Writer

	mu       sync.Mutex
	qmp      net.Conn
	agent    net.Conn
	portOpen bool
	bridge   net.Conn // the simulator's end of the current host stream
	done     chan struct{}
}

// agentPortID is the QEMU device id of the agent's virtio-serial port.
const agentPortID = "agentport"

func socketpair() (sim net.Conn, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	f := os.NewFile(uintptr(fds[0]), "socketpair")
	defer f.Close()
	sim, err = net.FileConn(f)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return sim, os.NewFile(uintptr(fds[1]), "socketpair"), nil
}

// Argv returns QEMU's command line for cfg and the files it inherits, in
// descriptor order from 3, plus the simulator's ends of the serial, agent
// (nil without vsock) and QMP socket pairs.
func (g *QEMUGuest) argv(cfg BootConfig) (args []string, files []*os.File, serial, agentConn, qmp net.Conn, err error) {
	var closers []io.Closer
	defer func() {
		if err != nil {
			for _, c := range closers {
				c.Close()
			}
		}
	}()
	pass := func(f *os.File) int {
		files = append(files, f)
		return 2 + len(files)
	}
	pair := func() (net.Conn, int, error) {
		sim, child, err := socketpair()
		if err != nil {
			return nil, 0, err
		}
		closers = append(closers, sim, child)
		return sim, pass(child), nil
	}
	procFD := func(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
	args = []string{g.Binary, "-name", "fcsim-" + cfg.ID,
		"-M", "microvm,x-option-roms=off,rtc=on,acpi=on", "-accel", "tcg", "-cpu", "max",
		"-m", strconv.Itoa(cfg.MemMiB) + "M", "-smp", strconv.Itoa(cfg.VCPUs),
		"-nographic", "-nodefaults", "-no-reboot"}
	serial, fd, err := pair()
	if err != nil {
		return
	}
	args = append(args, "-chardev", fmt.Sprintf("socket,id=con0,fd=%d", fd), "-serial", "chardev:con0",
		"-kernel", procFD(pass(cfg.Kernel)))
	if cfg.Initrd != nil {
		args = append(args, "-initrd", procFD(pass(cfg.Initrd)))
	}
	args = append(args, "-append", qemu.TCGKernelArgs(cfg.Cmdline))
	for i, d := range cfg.Drives {
		set := 10 + i
		args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d", pass(d.File), set))
		opt := ""
		if d.ReadOnly {
			opt = ",readonly=on"
		} else {
			// QEMU opens a read-write image in both modes: the
			// simulator opens it again by the path Firecracker opened.
			ro, err2 := os.Open(d.Path)
			if err2 != nil {
				err = fmt.Errorf("reopen drive %s read-only: %w", d.ID, err2)
				return
			}
			closers = append(closers, ro)
			args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d", pass(ro), set))
		}
		args = append(args, "-drive", fmt.Sprintf("id=%s,file=/dev/fdset/%d,format=raw,if=none%s", d.ID, set, opt),
			"-device", "virtio-blk-device,drive="+d.ID)
	}
	for i, n := range cfg.Nets {
		dev := fmt.Sprintf("virtio-net-device,netdev=n%d", i)
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		args = append(args, "-netdev", fmt.Sprintf("tap,id=n%d,fd=%d", i, pass(n.TAP)), "-device", dev)
	}
	if cfg.VsockCID != 0 {
		if agentConn, fd, err = pair(); err != nil {
			return
		}
		args = append(args, "-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d", fd),
			"-device", fmt.Sprintf("virtserialport,chardev=agent,name=%s,id=%s", agent.SerialPortName, agentPortID))
	}
	if qmp, fd, err = pair(); err != nil {
		return
	}
	args = append(args, "-chardev", fmt.Sprintf("socket,id=qmp,fd=%d", fd), "-mon", "chardev=qmp,mode=control")
	return args, files, serial, agentConn, qmp, nil
}

// Boot starts QEMU.
func (g *QEMUGuest) Boot(cfg BootConfig) error {
	if g.Log == nil {
		g.Log = io.Discard
	}
	args, files, serial, agentConn, qmp, err := g.argv(cfg)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.qmp, g.agent, g.done = qmp, agentConn, make(chan struct{})
	g.mu.Unlock()
	fmt.Fprintf(g.Log, "fcsim: booting the guest under QEMU: %q\n", args)
	launcher := g.Launcher
	if launcher == nil {
		launcher = LocalLauncher{}
	}
	wait, err := launcher.Launch(args, files, g.Log)
	// QEMU holds its ends of the socket pairs now.
	for _, f := range files {
		if f.Name() == "socketpair" {
			f.Close()
		}
	}
	if err != nil {
		close(g.done)
		return err
	}
	go func() {
		err := wait()
		fmt.Fprintf(g.Log, "fcsim: QEMU exited: %v\n", err)
		close(g.done)
	}()
	go io.Copy(cfg.Serial, serial)
	go g.readQMP(qmp)
	if agentConn != nil {
		go g.readAgent(agentConn)
	}
	return g.command("qmp_capabilities")
}

// command sends a QMP command; its reply is read (and an error logged) by
// readQMP.
func (g *QEMUGuest) command(cmd string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.qmp == nil {
		return errors.New("the guest is not running")
	}
	_, err := fmt.Fprintf(g.qmp, "{\"execute\": %q}\n", cmd)
	return err
}

// readQMP follows QEMU's events: whether the agent holds its port open.
func (g *QEMUGuest) readQMP(c net.Conn) {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Event string `json:"event"`
			Data  struct {
				ID   string `json:"id"`
				Open bool   `json:"open"`
			} `json:"data"`
			Error *struct {
				Desc string `json:"desc"`
			} `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		switch {
		case m.Error != nil:
			fmt.Fprintf(g.Log, "fcsim: qmp error: %s\n", m.Error.Desc)
		case m.Event == "VSERPORT_CHANGE" && m.Data.ID == agentPortID:
			g.mu.Lock()
			g.portOpen = m.Data.Open
			if !m.Data.Open && g.bridge != nil {
				// The guest's end went away: so does the connection.
				g.bridge.Close()
				g.bridge = nil
			}
			g.mu.Unlock()
			fmt.Fprintf(g.Log, "fcsim: guest agent port open: %v\n", m.Data.Open)
		}
	}
}

// readAgent copies what the guest writes on the agent port to the current
// host stream, and discards it while there is none.
func (g *QEMUGuest) readAgent(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			g.mu.Lock()
			b := g.bridge
			g.mu.Unlock()
			if b != nil {
				if _, werr := b.Write(buf[:n]); werr != nil {
					g.drop(b)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (g *QEMUGuest) drop(b net.Conn) {
	g.mu.Lock()
	if g.bridge == b {
		g.bridge = nil
	}
	g.mu.Unlock()
	b.Close()
}

// Dial connects to the guest agent's port while the agent holds it open.
func (g *QEMUGuest) Dial(port uint32) (net.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if port != agent.Port || g.agent == nil || !g.portOpen {
		return nil, ErrNoListener
	}
	if g.bridge != nil {
		g.bridge.Close()
	}
	host, sim := net.Pipe()
	g.bridge = sim
	go func() {
		io.Copy(g.agent, sim)
		g.drop(sim)
	}()
	return host, nil
}

// CtrlAltDel presses the ACPI power button.
func (g *QEMUGuest) CtrlAltDel() error { return g.command("system_powerdown") }

// Pause stops or continues the vCPUs.
func (g *QEMUGuest) Pause(pause bool) error {
	if pause {
		return g.command("stop")
	}
	return g.command("cont")
}

// Done is closed when QEMU has exited.
func (g *QEMUGuest) Done() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done == nil {
		g.done = make(chan struct{})
	}
	return g.done
}

// Close ends QEMU (quit), if it runs.
func (g *QEMUGuest) Close() error {
	g.command("quit")
	return nil
}

// Snapshot is not simulated under QEMU yet: the guest's RAM is anonymous.
func (g *QEMUGuest) Snapshot(io.Writer, *os.File) error {
	return fmt.Errorf("%w under QEMU by this simulator yet (its RAM is not file-backed)", errNoSnapshot)
}

// Restore is not simulated under QEMU yet (see Snapshot).
func (g *QEMUGuest) Restore(BootConfig, io.Reader, *os.File) error {
	return fmt.Errorf("%w under QEMU by this simulator yet (its RAM is not file-backed)", errNoSnapshot)
}
