package fcsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/image"
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

	mu      sync.Mutex
	cmdMu   sync.Mutex // one QMP command at a time
	replies chan qmpReply
	mem     *os.File // the guest's RAM, a memfd QEMU maps shared
	lastID  int      // of the last QMP command
	// incomingFD is QEMU's descriptor of the device state to restore.
	incomingFD int
	qmp        net.Conn
	agent      net.Conn
	portOpen   bool
	bridge     net.Conn // the simulator's end of the current host stream
	done       chan struct{}
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
func (g *QEMUGuest) argv(cfg BootConfig, mem, incoming *os.File) (args []string, files []*os.File, serial, agentConn, qmp net.Conn, err error) {
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
		"-nographic", "-nodefaults", "-no-reboot",
		// The RAM is a memfd of the simulator's, mapped shared, so that
		// a snapshot can save it (see Snapshot).
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on", cfg.MemMiB, procFD(pass(mem))),
		"-M", "memory-backend=mem"}
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
	if incoming != nil {
		// Restore sets the capabilities, then migrate-incoming fd:N;
		// the guest stays stopped (-S) until resumed.
		g.incomingFD = pass(incoming)
		args = append(args, "-incoming", "defer", "-S")
	}
	return args, files, serial, agentConn, qmp, nil
}

// Boot starts QEMU.
func (g *QEMUGuest) Boot(cfg BootConfig) error {
	mem, err := newRAM(cfg.MemMiB)
	if err != nil {
		return err
	}
	return g.launch(cfg, mem, nil)
}

// newRAM is an empty memfd of miB MiB for the guest's RAM.
func newRAM(miB int) (*os.File, error) {
	fd, err := unix.MemfdCreate("fcsim-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:fcsim-guest-ram")
	if err := f.Truncate(int64(miB) << 20); err != nil {
		f.Close()
		return nil, fmt.Errorf("size the guest's RAM: %w", err)
	}
	return f, nil
}

// launch starts QEMU on the RAM mem (which it keeps), booting the kernel,
// or, with incoming, waiting for the device state QEMU reads from it.
func (g *QEMUGuest) launch(cfg BootConfig, mem, incoming *os.File) error {
	if g.Log == nil {
		g.Log = io.Discard
	}
	args, files, serial, agentConn, qmp, err := g.argv(cfg, mem, incoming)
	if err != nil {
		mem.Close()
		return err
	}
	g.mu.Lock()
	g.qmp, g.agent, g.done, g.mem = qmp, agentConn, make(chan struct{}), mem
	g.replies = make(chan qmpReply, 1)
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

// qmpReply is QEMU's answer to a command.
type qmpReply struct {
	ID     int             `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Desc string `json:"desc"`
	} `json:"error"`
}

// qmpTimeout bounds one QMP command.
const qmpTimeout = 30 * time.Second

// command runs a QMP command without arguments.
func (g *QEMUGuest) command(cmd string) error {
	_, err := g.execute(cmd, nil, nil)
	return err
}

// execute runs a QMP command with args (nil for none), passing file
// along (SCM_RIGHTS, for getfd) when not nil, and returns its answer.
func (g *QEMUGuest) execute(cmd string, args any, file *os.File) (json.RawMessage, error) {
	g.cmdMu.Lock()
	defer g.cmdMu.Unlock()
	g.mu.Lock()
	qmp, replies, done := g.qmp, g.replies, g.done
	g.mu.Unlock()
	if qmp == nil {
		return nil, errors.New("the guest is not running")
	}
	g.lastID++
	id := g.lastID
	msg := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	var err error
	if file != nil {
		_, _, err = qmp.(*net.UnixConn).WriteMsgUnix(b, unix.UnixRights(int(file.Fd())), nil)
	} else {
		_, err = qmp.Write(append(b, '\n'))
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	timeout := time.After(qmpTimeout)
	for {
		select {
		case r := <-replies:
			if r.ID != id {
				continue // the late answer to a command that timed out
			}
			if r.Error != nil {
				return nil, fmt.Errorf("qmp %s: %s", cmd, r.Error.Desc)
			}
			return r.Return, nil
		case <-done:
			return nil, fmt.Errorf("qmp %s: QEMU exited", cmd)
		case <-timeout:
			return nil, fmt.Errorf("qmp %s: no answer within %v", cmd, qmpTimeout)
		}
	}
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
		var r qmpReply
		json.Unmarshal(sc.Bytes(), &r)
		switch {
		case m.Error != nil || r.Return != nil:
			if m.Error != nil {
				fmt.Fprintf(g.Log, "fcsim: qmp error: %s\n", m.Error.Desc)
			}
			g.mu.Lock()
			replies := g.replies
			g.mu.Unlock()
			select {
			case replies <- r:
			default: // an answer nobody waits for (the greeting has none)
			}
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

// Close ends QEMU (quit), if it runs, and lets go of its RAM.
func (g *QEMUGuest) Close() error {
	g.command("quit")
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mem != nil {
		g.mem.Close()
		g.mem = nil
	}
	return nil
}

// ignoreShared is the migration capability that leaves the shared RAM
// out of the stream: only the device state is saved.
var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// Snapshot saves the paused guest: QEMU migrates its device state (the
// RAM left out: x-ignore-shared) into a pipe copied to state, and the
// simulator copies the RAM, its own memfd, to mem.
func (g *QEMUGuest) Snapshot(state io.Writer, mem *os.File) error {
	if _, err := g.execute("migrate-set-capabilities", ignoreShared, nil); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(state, r)
		copied <- err
	}()
	_, err = g.execute("getfd", map[string]string{"fdname": "snapshot"}, w)
	w.Close()
	if err == nil {
		_, err = g.execute("migrate", map[string]string{"uri": "fd:snapshot"}, nil)
	}
	if err == nil {
		err = g.waitMigration()
	}
	if err != nil {
		return err
	}
	if err := <-copied; err != nil {
		return fmt.Errorf("write the device state: %w", err)
	}
	g.mu.Lock()
	ram := g.mem
	g.mu.Unlock()
	info, err := ram.Stat()
	if err != nil {
		return err
	}
	if err := image.SparseCopy(context.Background(), mem, ram, info.Size()); err != nil {
		return fmt.Errorf("write the guest's memory: %w", err)
	}
	return nil
}

// Restore starts QEMU waiting for a migration (-incoming fd:N, a pipe
// fed from state) on a copy of mem: QEMU 7.2 opens a memory file
// read-write even to map it privately, so the simulator, which must not
// write mem (Firecracker maps it privately), hands it a memfd copy of it
// (this costs the copy; Firecracker's clones share the file's pages). The
// guest stays paused, as Firecracker leaves a loaded microVM until
// resume_vm.
func (g *QEMUGuest) Restore(cfg BootConfig, state io.Reader, mem *os.File) error {
	ram, err := newRAM(cfg.MemMiB)
	if err != nil {
		return err
	}
	if err := image.SparseCopy(context.Background(), ram, mem, int64(cfg.MemMiB)<<20); err != nil {
		ram.Close()
		return fmt.Errorf("copy the snapshot's memory: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		ram.Close()
		return err
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, state)
		w.Close()
		copied <- err
	}()
	err = g.launch(cfg, ram, r)
	r.Close()
	if err == nil {
		_, err = g.execute("migrate-set-capabilities", ignoreShared, nil)
	}
	if err == nil {
		_, err = g.execute("migrate-incoming", map[string]string{"uri": fmt.Sprintf("fd:%d", g.incomingFD)}, nil)
	}
	if err == nil {
		err = g.waitMigration()
	}
	if err != nil {
		w.Close()
		<-copied
		return err
	}
	if err := <-copied; err != nil {
		return fmt.Errorf("read the device state: %w", err)
	}
	// The guest had the agent's port open when it was saved (QEMU
	// migrates that, and sends no VSERPORT_CHANGE for it): it listens.
	g.mu.Lock()
	g.portOpen = g.agent != nil
	g.mu.Unlock()
	return nil
}

// waitMigration polls query-migrate until the migration completed.
func (g *QEMUGuest) waitMigration() error {
	deadline := time.Now().Add(qmpTimeout)
	for {
		raw, err := g.execute("query-migrate", nil, nil)
		if err != nil {
			return err
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		json.Unmarshal(raw, &m)
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migration still %q after %v", m.Status, qmpTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
