package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/testhost"
)

// testLog sends log lines to the test's output.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// openPTY is a raw pseudo-terminal pair: the slave (by its name) stands in
// for the guest's /dev/virtio-ports/... node, the master for the host end.
func openPTY(t testing.TB) (master *os.File, slavePath string) {
	t.Helper()
	m, s := testhost.RawPTY(t)
	return m, s.Name()
}

// TestServeSerialPortPTY runs the real serving loop on a device path that
// appears only after the loop started (a pty behind a symlink, as udev makes
// /dev/virtio-ports/org.banger.agent), then pings through the pty master.
func TestServeSerialPortPTY(t *testing.T) {
	master, slave := openPTY(t)
	link := filepath.Join(t.TempDir(), SerialPortName)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- serveSerial(ctx, serialConfig{
			path: link, open: openSerialPort, serve: serverServe(t), log: testLog(t),
			retry: 20 * time.Millisecond, missingMax: 50 * time.Millisecond,
		})
	}()
	time.Sleep(100 * time.Millisecond) // the loop sees the port missing first
	if err := os.Symlink(slave, link); err != nil {
		t.Fatal(err)
	}

	// An earlier session's half-written request is still in the port.
	io.WriteString(master, `{"op":"ping","id":"interrupted`)
	for i := range 3 {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		r, rtt, err := Ping(pctx, master)
		pcancel()
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if !r.OK || r.BootID != testInfo.BootID {
			t.Fatalf("ping %d: %+v", i, r)
		}
		t.Logf("ping %d over the pty: %v", i, rtt)
	}
	// Then a session on the same port, as the daemon opens one.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	sess, err := Connect(sctx, master, testLog(t))
	scancel()
	if err != nil {
		t.Fatalf("session over the pty: %v", err)
	}
	info, rtt, off, err := sess.Ping(ctx)
	if err != nil || info.BootID != testInfo.BootID {
		t.Fatalf("session ping: %+v %v", info, err)
	}
	t.Logf("session ping over the pty: rtt %v, offset %v", rtt, off)
	// Connect closes the channel with the session: keep the master open
	// for the loop by not closing the session.

	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("loop returned %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not stop on cancel")
	}
}

// legacyServe serves the line protocol only (the fake ports have no
// deadlines).
func legacyServe(ctx context.Context, p serialPort) error { return Serve(ctx, p, fixedInfo) }

// serverServe serves sessions as ServeSerialPort does.
func serverServe(t *testing.T) func(context.Context, serialPort) error {
	s := NewServer(fixedInfo, testLog(t))
	return func(ctx context.Context, p serialPort) error { return s.serveChannel(ctx, p.(deadlineConn)) }
}

// fakePort stands in for an open virtio-serial port.
type fakePort struct {
	read  func([]byte) (int, error)
	reads *atomic.Int64
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.reads.Add(1)
	return p.read(b)
}
func (p *fakePort) Write(b []byte) (int, error) { return len(b), nil }
func (p *fakePort) Close() error                { return nil }

// runSerial runs the loop with open for d and returns how often open and Read
// were called.
func runSerial(t *testing.T, d time.Duration, sysfs string, open func(path string) (serialPort, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := serveSerial(ctx, serialConfig{
		path: "/dev/virtio-ports/" + SerialPortName, open: open, serve: legacyServe, log: testLog(t),
		retry: 200 * time.Millisecond, missingMax: time.Second, sysfs: sysfs,
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("loop returned %v", err)
	}
}

// TestServeSerialBacksOff: a port whose host side is not connected returns
// end of file at once, forever; the loop must pause instead of spinning.
func TestServeSerialBacksOff(t *testing.T) {
	var reads, opens atomic.Int64
	runSerial(t, time.Second, "", func(string) (serialPort, error) {
		opens.Add(1)
		return &fakePort{read: func([]byte) (int, error) { return 0, io.EOF }, reads: &reads}, nil
	})
	// 200 ms pauses: about 5 reads in a second. A spinning loop does
	// millions.
	if n := reads.Load(); n < 2 || n > 10 {
		t.Fatalf("%d reads in 1s of EOF", n)
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("port opened %d times; EOF should not reopen it", n)
	}
}

// TestServeSerialReopens: an I/O error closes and reopens the port, with a
// pause; a missing port is polled with a growing pause.
func TestServeSerialReopens(t *testing.T) {
	t.Run("read error", func(t *testing.T) {
		var reads, opens atomic.Int64
		runSerial(t, time.Second, "", func(string) (serialPort, error) {
			opens.Add(1)
			return &fakePort{read: func([]byte) (int, error) { return 0, unix.EIO }, reads: &reads}, nil
		})
		if n := opens.Load(); n < 2 || n > 10 {
			t.Fatalf("port opened %d times in 1s of errors", n)
		}
	})
	t.Run("missing", func(t *testing.T) {
		var opens atomic.Int64
		runSerial(t, 2*time.Second, "", func(string) (serialPort, error) {
			opens.Add(1)
			return nil, fs.ErrNotExist
		})
		// 0.2+0.4+0.8+1 s: four or five tries in 2 s.
		if n := opens.Load(); n < 3 || n > 7 {
			t.Fatalf("missing port tried %d times in 2s", n)
		}
	})
	t.Run("permission", func(t *testing.T) {
		var opens atomic.Int64
		runSerial(t, time.Second, "", func(string) (serialPort, error) {
			opens.Add(1)
			return nil, fs.ErrPermission
		})
		if n := opens.Load(); n < 2 || n > 6 {
			t.Fatalf("unopenable port tried %d times in 1s", n)
		}
	})
}

// TestServeSerialSysfsFallback: without the udev link, the port is found by
// name under /sys/class/virtio-ports.
func TestServeSerialSysfsFallback(t *testing.T) {
	sysfs := t.TempDir()
	for dev, name := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport1p2": SerialPortName} {
		os.MkdirAll(filepath.Join(sysfs, dev), 0o755)
		os.WriteFile(filepath.Join(sysfs, dev, "name"), []byte(name+"\n"), 0o644)
	}
	var mu sync.Mutex
	var tried []string
	var reads atomic.Int64
	runSerial(t, 300*time.Millisecond, sysfs, func(p string) (serialPort, error) {
		mu.Lock()
		defer mu.Unlock()
		tried = append(tried, p)
		if p == "/dev/vport1p2" {
			return &fakePort{read: func([]byte) (int, error) { return 0, io.EOF }, reads: &reads}, nil
		}
		return nil, fs.ErrNotExist
	})
	mu.Lock()
	defer mu.Unlock()
	if len(tried) < 2 || tried[0] != SerialDevicePath || tried[1] != "/dev/vport1p2" {
		t.Fatalf("opened %q", tried)
	}
	if got, ok := findVirtioPort(filepath.Join(sysfs, "nope"), SerialPortName); ok {
		t.Fatalf("found %q in a missing folder", got)
	}
}

func TestServeListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- NewServer(fixedInfo, testLog(t)).ServeListener(ctx, ln) }()

	var wg sync.WaitGroup
	var idle []net.Conn // connections left open: cancel must still finish
	for range 4 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		wg.Go(func() {
			for range 5 {
				if _, _, err := Ping(context.Background(), c); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ServeListener = %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeListener did not return on cancel")
	}
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("connection still open after cancel: %v", err)
		}
		c.Close()
	}
}

func TestServeListenerLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewServer(fixedInfo, testLog(t)).ServeListener(ctx, ln)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range maxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, _, err := Ping(context.Background(), c); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
	}
	extra, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if _, _, err := Ping(pctx, extra); err == nil {
		t.Fatal("connection beyond the limit was served")
	}
	conns[0].Close() // frees a slot, once the server has read its end
	conns = conns[1:]
	// Until the server has seen the close, a new connection is still one
	// too many and closed on arrival: dial until one is served.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err = Ping(pctx, c)
		pcancel()
		if err == nil {
			conns = append(conns, c)
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("after a slot freed: %v", err)
		}
	}
}

// TestVsockLoopback exercises ListenVsock and DialVsock through the host
// kernel's vsock loopback transport (CID 1), when it has one.
func TestVsockLoopback(t *testing.T) {
	ln, err := ListenVsock(unix.VMADDR_PORT_ANY)
	if errors.Is(err, ErrVsockUnavailable) {
		testhost.SkipHardware(t, "no AF_VSOCK in this kernel: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(VsockAddr)
	if addr.Port == unix.VMADDR_PORT_ANY || addr.Port == 0 {
		t.Fatalf("listener address %v: no port assigned", addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- NewServer(fixedInfo, testLog(t)).ServeListener(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("ServeListener = %v", err)
		}
	}()

	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	c, err := DialVsock(dctx, unix.VMADDR_CID_LOCAL, addr.Port)
	if err != nil {
		testhost.SkipHardware(t, "no vsock loopback transport (vsock_loopback) in this kernel: %v", err)
	}
	defer c.Close()
	r, rtt, err := Ping(dctx, c)
	if err != nil || !r.OK {
		t.Fatalf("ping over vsock loopback: %+v, %v", r, err)
	}
	t.Logf("ping over vsock loopback %v -> %v: %v", c.LocalAddr(), c.RemoteAddr(), rtt)

	if _, err := DialVsock(dctx, unix.VMADDR_CID_LOCAL, addr.Port+1); err == nil {
		t.Error("dial to a port nobody listens on succeeded")
	}
}

func TestListenVsockErrors(t *testing.T) {
	ln, err := ListenVsock(unix.VMADDR_PORT_ANY)
	if errors.Is(err, ErrVsockUnavailable) {
		testhost.SkipHardware(t, "no AF_VSOCK in this kernel: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(VsockAddr).Port
	if _, err := ListenVsock(port); err == nil || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Errorf("second listen on port %d: %v", port, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Accept")
	}
}

// TestWaitSIGIO: the wait for the host ends at the kernel's SIGIO for the
// port (here a pty's slave, which signals when the master writes), not
// at its maximum; without a signal it lasts its maximum.
func TestWaitSIGIO(t *testing.T) {
	master, slave := testhost.RawPTY(t)
	notReady := func(int) bool { return false }
	start := time.Now()
	waitSIGIO(context.Background(), slave, time.Second, 300*time.Millisecond, notReady)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("a wait without a signal ended after %v", took)
	}
	// The master writes until the wait ends: a write before the wait
	// armed itself signals nothing.
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				master.Write([]byte("x"))
			}
		}
	}()
	start = time.Now()
	waitSIGIO(context.Background(), slave, time.Second, 20*time.Second, notReady)
	close(done)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the wait did not end at the signal: %v", took)
	}
	// O_ASYNC is off again: the session's data does not signal.
	rc, _ := slave.SyscallConn()
	var fl int
	rc.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if fl&unix.O_ASYNC != 0 {
		t.Fatal("O_ASYNC still set after the wait")
	}
	// An event before the wait began is seen by ready.
	start = time.Now()
	waitSIGIO(context.Background(), slave, time.Second, 20*time.Second, func(int) bool { return true })
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a ready port waited %v", took)
	}
}
