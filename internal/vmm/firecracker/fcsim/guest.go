package fcsim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Guest is what the simulator boots at InstanceStart. Its methods are
// called with the server's lock held, except Dial and Done.
type Guest interface {
	// Boot starts the guest from cfg. The files in cfg stay open (the
	// server owns them) until the server is closed.
	Boot(cfg BootConfig) error
	// CtrlAltDel delivers ctrl-alt-del to the running guest.
	CtrlAltDel() error
	// Pause pauses (true) or resumes (false) the guest.
	Pause(bool) error
	// Dial opens a connection to a service listening on vsock port in
	// the guest; it fails (ErrNoListener) when nothing listens there.
	Dial(port uint32) (net.Conn, error)
	// Done is closed when the guest has ended: it reset, powered off, or
	// what runs it died.
	Done() <-chan struct{}
	// Close stops the guest, if it runs.
	Close() error
	// Snapshot saves the paused guest: its device state to state, its
	// RAM to mem (already sized to the guest memory).
	Snapshot(state io.Writer, mem *os.File) error
	// Restore starts the guest, paused, from a snapshot: the device
	// state read from state, the RAM from mem (never written: mapped
	// privately), the devices of cfg (Kernel and Initrd those the
	// snapshotted microVM booted, for a guest that needs them). The guest
	// keeps mem open as long as it needs it.
	Restore(cfg BootConfig, state io.Reader, mem *os.File) error
}

// ErrNoListener is returned by Guest.Dial when nothing in the guest listens
// on the port (Firecracker then closes the host's connection).
var ErrNoListener = errors.New("nothing listens on this vsock port in the guest")

// BootConfig is the configured microVM InstanceStart hands the guest.
type BootConfig struct {
	// ID is the instance id.
	ID string
	// Kernel and Initrd (nil when none) are the files PUT /boot-source
	// opened.
	Kernel, Initrd *os.File
	// Cmdline is the kernel command line Firecracker would build.
	Cmdline string
	// VCPUs and MemMiB are the machine configuration.
	VCPUs, MemMiB int
	// Drives and Nets are the configured devices, in the order they were
	// added (the root drive is attached as /dev/vda by Firecracker only
	// when it comes first; banger's only drive is the root).
	Drives []BootDrive
	Nets   []BootNet
	// VsockCID is the guest CID of the vsock device, 0 without one.
	VsockCID uint32
	// Serial receives the guest's serial console.
	Serial io.Writer
}

// BootDrive is one block device: its opened backing file.
type BootDrive struct {
	ID string
	// Path is path_on_host, as the simulator opened it.
	Path     string
	File     *os.File
	ReadOnly bool
}

// BootNet is one network device: its opened TAP and guest MAC.
type BootNet struct {
	ID  string
	TAP *os.File
	MAC string
}

// DefaultResetDelay is how long a FakeGuest takes to reset after
// ctrl-alt-del.
const DefaultResetDelay = 100 * time.Millisecond

// FakeGuest is a Guest that runs nothing, for unit tests: Boot writes a
// line naming the kernel command line to the serial console; services
// registered with Handle listen once ListenDelay has passed after Boot (a
// real guest's services come up some time after the VMM starts it);
// ctrl-alt-del makes it "reset" after ResetDelay, unless IgnoreCtrlAltDel.
type FakeGuest struct {
	// ResetDelay is how long after ctrl-alt-del the guest resets; 0 means
	// DefaultResetDelay.
	ResetDelay time.Duration
	// IgnoreCtrlAltDel makes the guest ignore ctrl-alt-del, like a guest
	// whose init turned off the kernel's reboot on ctrl-alt-del.
	IgnoreCtrlAltDel bool
	// ListenDelay is how long after Boot the services start listening.
	ListenDelay time.Duration
	// Restored is the configuration Restore was given, nil before.
	Restored *BootConfig

	mu        sync.Mutex
	handlers  map[uint32]func(net.Conn)
	listening time.Time // zero until booted
	serial    io.Writer
	done      chan struct{}
	doneOnce  sync.Once
}

// Handle makes a service of the guest listen on vsock port (from
// ListenDelay after boot): host connections to it are handed to h, which
// must close them.
func (g *FakeGuest) Handle(port uint32, h func(net.Conn)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.handlers == nil {
		g.handlers = map[uint32]func(net.Conn){}
	}
	g.handlers[port] = h
}

func (g *FakeGuest) doneChan() chan struct{} {
	if g.done == nil {
		g.done = make(chan struct{})
	}
	return g.done
}

// Boot "boots": it writes the command line to the serial console.
func (g *FakeGuest) Boot(cfg BootConfig) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.doneChan()
	g.serial = cfg.Serial
	g.listening = time.Now().Add(g.ListenDelay)
	_, err := fmt.Fprintf(cfg.Serial, "fcsim: simulated guest booting (no kernel runs); kernel command line: %s\n", cfg.Cmdline)
	return err
}

// CtrlAltDel schedules the reset, unless the guest ignores it.
func (g *FakeGuest) CtrlAltDel() error {
	if g.IgnoreCtrlAltDel {
		return nil
	}
	d := g.ResetDelay
	if d <= 0 {
		d = DefaultResetDelay
	}
	time.AfterFunc(d, func() {
		g.mu.Lock()
		fmt.Fprintf(g.serial, "reboot: Restarting system\n")
		g.mu.Unlock()
		g.end()
	})
	return nil
}

// Pause does nothing: nothing runs.
func (g *FakeGuest) Pause(bool) error { return nil }

// Dial connects to a registered service once it listens.
func (g *FakeGuest) Dial(port uint32) (net.Conn, error) {
	g.mu.Lock()
	h := g.handlers[port]
	ready := !g.listening.IsZero() && !time.Now().Before(g.listening)
	g.mu.Unlock()
	if h == nil || !ready {
		return nil, ErrNoListener
	}
	host, guest := net.Pipe()
	go h(guest)
	return host, nil
}

// Done is closed when the guest reset.
func (g *FakeGuest) Done() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.doneChan()
}

func (g *FakeGuest) end() {
	g.mu.Lock()
	done := g.doneChan()
	g.mu.Unlock()
	g.doneOnce.Do(func() { close(done) })
}

// Close does nothing.
func (g *FakeGuest) Close() error { return nil }

// fakeState and fakeMemory are what a FakeGuest saves: its device state,
// and a mark at the start of its RAM.
const (
	fakeState  = "fcsim fake guest state\n"
	fakeMemory = "fcsim fake guest memory\n"
)

// Snapshot writes the fake state and marks the memory.
func (g *FakeGuest) Snapshot(state io.Writer, mem *os.File) error {
	if _, err := io.WriteString(state, fakeState); err != nil {
		return err
	}
	_, err := mem.WriteAt([]byte(fakeMemory), 0)
	return err
}

// Restore checks that state and mem are what Snapshot saved, then "runs"
// (paused) as a booted FakeGuest does.
func (g *FakeGuest) Restore(cfg BootConfig, state io.Reader, mem *os.File) error {
	b, err := readAllState(state)
	if err != nil {
		return err
	}
	if string(b) != fakeState {
		return fmt.Errorf("the device state is not a fake guest's: %q", b)
	}
	mark := make([]byte, len(fakeMemory))
	if _, err := mem.ReadAt(mark, 0); err != nil || string(mark) != fakeMemory {
		return fmt.Errorf("the memory file is not a fake guest's (it starts %q)", mark)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.doneChan()
	g.serial = cfg.Serial
	g.listening = time.Now()
	g.Restored = &cfg
	_, err = fmt.Fprintf(cfg.Serial, "fcsim: simulated guest restored from a snapshot (no kernel runs)\n")
	return err
}

// Echo is a guest service that echoes what it reads.
func Echo(c net.Conn) {
	defer c.Close()
	io.Copy(c, c)
}

// Greeting is what Greet sends first.
const Greeting = "hello from the fcsim guest\n"

// Greet is a guest service that sends Greeting at once, before reading
// anything, then echoes lines. It catches a host side that reads past the
// handshake's OK line.
func Greet(c net.Conn) {
	defer c.Close()
	io.WriteString(c, Greeting)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		fmt.Fprintf(c, "%s\n", sc.Text())
	}
}

// Guest ports the simulator's fake guest serves.
const (
	EchoPort  = 7
	GreetPort = 8
)
