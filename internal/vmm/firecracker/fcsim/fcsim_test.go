package fcsim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
	"github.com/bangerhq/banger/internal/vmm/firecracker/vmlinux"
	"github.com/bangerhq/banger/internal/vmm/vmmtest"
)

func loadSpec(t *testing.T) *fcspec.Spec {
	t.Helper()
	s, err := fcspec.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// shortDir returns a fresh folder with a short path: t.TempDir() paths
// grow with the test name and Unix socket paths must stay under 108 bytes.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "fcsim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type sim struct {
	*Server
	guest  *FakeGuest
	dir    string
	c      *firecracker.Client
	stdout *syncBuf
	kernel string
	disk   string
}

func newSim(t *testing.T) *sim {
	t.Helper()
	dir := shortDir(t)
	out := &syncBuf{}
	guest := &FakeGuest{ResetDelay: 20 * time.Millisecond}
	srv, err := New(Options{APISock: filepath.Join(dir, "api.sock"), ID: "sim-1", Spec: loadSpec(t), Stdout: out, Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	s := &sim{Server: srv, guest: guest, dir: dir, c: firecracker.NewClient(filepath.Join(dir, "api.sock"), 2*time.Second), stdout: out,
		kernel: filepath.Join(dir, "vmlinux"), disk: filepath.Join(dir, "disk.ext4")}
	if err := os.WriteFile(s.kernel, vmlinux.Minimal(true), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.disk, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var ctx = context.Background()

// faultOf returns the fault message of an *APIError, failing otherwise.
func faultOf(t *testing.T, err error) string {
	t.Helper()
	var ae *firecracker.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an APIError, got %v", err)
	}
	if ae.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %v", ae.StatusCode, err)
	}
	return ae.FaultMessage
}

func wantFault(t *testing.T, err error, want string) {
	t.Helper()
	if msg := faultOf(t, err); !strings.Contains(msg, want) {
		t.Fatalf("fault message %q does not contain %q", msg, want)
	}
}

func (s *sim) put(t *testing.T, path string, body any) {
	t.Helper()
	if err := s.c.Put(ctx, path, body); err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
}

func (s *sim) boot(t *testing.T) {
	t.Helper()
	s.put(t, "/machine-config", fcapi.MachineConfiguration{VcpuCount: 1, MemSizeMib: 128})
	s.put(t, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, BootArgs: "console=ttyS0 reboot=k root=/dev/vda rw"})
	s.put(t, "/drives/rootfs", fcapi.Drive{DriveID: "rootfs", IsRootDevice: true, PathOnHost: s.disk, IsReadOnly: new(false)})
	s.put(t, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart})
}

func TestInstanceInfo(t *testing.T) {
	s := newSim(t)
	info, err := s.c.InstanceInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := fcapi.InstanceInfo{AppName: "Firecracker", ID: "sim-1", State: "Not started", VMMVersion: "1.16.1"}
	if info != want {
		t.Fatalf("GET / = %+v, want %+v", info, want)
	}
	if v, err := s.c.Version(ctx); err != nil || v != "1.16.1" {
		t.Fatalf("GET /version = %q, %v", v, err)
	}
	s.boot(t)
	if info, _ := s.c.InstanceInfo(ctx); info.State != "Running" {
		t.Fatalf("state after InstanceStart %q", info.State)
	}
	if err := s.c.Patch(ctx, "/vm", fcapi.VM{State: fcapi.VMPaused}); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.c.InstanceInfo(ctx); info.State != "Paused" {
		t.Fatalf("state after pause %q", info.State)
	}
}

func TestRules(t *testing.T) {
	s := newSim(t)
	// Before boot.
	wantFault(t, s.c.Put(ctx, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionSendCtrlAltDel}), "not supported before starting the microVM")
	wantFault(t, s.c.Patch(ctx, "/vm", fcapi.VM{State: fcapi.VMPaused}), "not supported before starting the microVM")
	wantFault(t, s.c.Put(ctx, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart}), "without kernel configuration")
	wantFault(t, s.c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: filepath.Join(s.dir, "nope")}), "The kernel file cannot be opened: No such file or directory (os error 2)")
	wantFault(t, s.c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, InitrdPath: "/nonexistent"}), "initrd file cannot be opened")
	wantFault(t, s.c.Put(ctx, "/drives/rootfs", fcapi.Drive{DriveID: "root", IsRootDevice: true, PathOnHost: s.disk}), "does not match the id from the body")
	wantFault(t, s.c.Put(ctx, "/drives/root-fs", fcapi.Drive{DriveID: "root-fs", IsRootDevice: true, PathOnHost: s.disk}), "alphanumeric characters and underscores")
	wantFault(t, s.c.Put(ctx, "/drives/rootfs", fcapi.Drive{DriveID: "rootfs", IsRootDevice: true, PathOnHost: "/nonexistent"}), "backing file")
	wantFault(t, s.c.Put(ctx, "/drives/rootfs", rawJSON(`{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/d", "cache": "x"}`)), "deserializing the json body")
	wantFault(t, s.c.Put(ctx, "/machine-config", rawJSON(`{"vcpu_count": "1", "mem_size_mib": 128}`)), "deserializing the json body")
	wantFault(t, s.c.Put(ctx, "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "52:54:00:zz:00:01"}), "MAC")
	wantFault(t, s.c.Put(ctx, "/frobnicate", rawJSON(`{}`)), "Invalid request method and/or path: PUT /frobnicate.")
	wantFault(t, s.c.Put(ctx, "/balloon", rawJSON(`{"amount_mib": 1, "deflate_on_oom": true}`)), "not simulated")
	wantFault(t, s.c.Put(ctx, "/vsock", nil), "Empty PUT request.")

	s.put(t, "/drives/rootfs", fcapi.Drive{DriveID: "rootfs", IsRootDevice: true, PathOnHost: s.disk})
	wantFault(t, s.c.Put(ctx, "/drives/other", fcapi.Drive{DriveID: "other", IsRootDevice: true, PathOnHost: s.disk}), "A root block device already exists!")
	tap := vmmtest.TAP(t, os.Geteuid())
	s.put(t, "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: tap, GuestMAC: "52:54:00:00:00:01"})
	wantFault(t, s.c.Patch(ctx, "/drives/rootfs", rawJSON(`{"drive_id": "rootfs"}`)), "not supported before starting the microVM")

	s.boot(t)
	// After boot: pre-boot resources are refused, InstanceStart works once;
	// drives and interfaces would be hotplugged, which needs PCI.
	wantFault(t, s.c.Put(ctx, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart}), "not supported after starting the microVM")
	for path, body := range map[string]any{
		"/logger":         fcapi.Logger{Level: "Info"},
		"/machine-config": fcapi.MachineConfiguration{VcpuCount: 1, MemSizeMib: 128},
		"/boot-source":    fcapi.BootSource{KernelImagePath: s.kernel},
		"/vsock":          fcapi.Vsock{GuestCID: 3, UDSPath: filepath.Join(s.dir, "v.sock")},
		"/serial":         fcapi.SerialDevice{SerialOutPath: filepath.Join(s.dir, "serial")},
	} {
		wantFault(t, s.c.Put(ctx, path, body), "not supported after starting the microVM")
	}
	wantFault(t, s.c.Put(ctx, "/drives/data", fcapi.Drive{DriveID: "data", PathOnHost: s.disk}), "PCI is not enabled")
	wantFault(t, s.c.Put(ctx, "/network-interfaces/eth1", fcapi.NetworkInterface{IfaceID: "eth1", HostDevName: tap}), "PCI is not enabled")
	if err := s.c.Patch(ctx, "/drives/rootfs", rawJSON(`{"drive_id": "rootfs"}`)); err != nil {
		t.Errorf("PATCH drive after boot: %v", err)
	}
	wantFault(t, s.c.Patch(ctx, "/drives/nope", rawJSON(`{"drive_id": "nope"}`)), "Device not found")
	if err := s.c.Patch(ctx, "/network-interfaces/eth0", rawJSON(`{"iface_id": "eth0"}`)); err != nil {
		t.Errorf("PATCH interface after boot: %v", err)
	}
	wantFault(t, s.c.Patch(ctx, "/network-interfaces/eth9", rawJSON(`{"iface_id": "eth9"}`)), "Unable to update the net device: Failed perform action on device: Device not found")
	// Validation comes first, as in Firecracker: an invalid body gets the
	// deserialization error even post-boot.
	wantFault(t, s.c.Put(ctx, "/vsock", rawJSON(`{"guest_cid": 3}`)), "deserializing the json body")
}

// TestTAP: the TAP is opened at PUT /network-interfaces, as Firecracker
// opens it: a missing one, or one of another user, is refused.
func TestTAP(t *testing.T) {
	s := newSim(t)
	wantFault(t, s.c.Put(ctx, "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "bgr-nosuchtap"}),
		"Could not create the network device: Open tap device failed: Error while creating ifreq structure: Operation not permitted (os error 1). Invalid TUN/TAP Backend provided by bgr-nosuchtap.")
	tap := vmmtest.TAP(t, os.Geteuid())
	s.put(t, "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: tap})
	wantFault(t, s.c.Put(ctx, "/network-interfaces/eth1", fcapi.NetworkInterface{IfaceID: "eth1", HostDevName: tap}), "Invalid TUN/TAP Backend provided by "+tap)
	// The TAP is attached: the kernel refuses a second attachment.
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := openTAP("/dev/net/tun", tap); !errors.Is(err, nil) && !strings.Contains(err.Error(), "Device or resource busy") {
		t.Fatalf("second open of an attached tap: %v, want busy", err)
	} else if err == nil {
		t.Fatal("the simulator did not hold the tap open")
	}
}

// TestBootSourceChecks: the command line is checked at PUT /boot-source,
// the kernel at InstanceStart, as Firecracker's loader checks them.
func TestBootSourceChecks(t *testing.T) {
	s := newSim(t)
	wantFault(t, s.c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, BootArgs: strings.Repeat("a", 2048)}),
		"The kernel command line is invalid: Inserting string would make command line too long.")
	wantFault(t, s.c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, BootArgs: "console=ttyS0\tquiet"}),
		"The kernel command line is invalid: String contains a non-printable ASCII character.")
	wantFault(t, s.c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, BootArgs: "quiet root=/dev/vda é"}),
		"non-printable ASCII")
	s.put(t, "/boot-source", fcapi.BootSource{KernelImagePath: s.kernel, BootArgs: strings.Repeat("a", 2047)})
	// Firecracker's own additions must fit as well.
	wantFault(t, s.c.Put(ctx, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart}),
		"Invalid kernel command line: Inserting string would make command line too long.")

	bz := filepath.Join(s.dir, "bzImage")
	b := make([]byte, 8192)
	copy(b[0x1fe:], []byte{0x55, 0xaa, 0xeb, 0x66, 'H', 'd', 'r', 'S'})
	os.WriteFile(bz, b, 0o600)
	s.put(t, "/boot-source", fcapi.BootSource{KernelImagePath: bz})
	wantFault(t, s.c.Put(ctx, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionInstanceStart}),
		"Cannot load kernel due to invalid memory configuration or invalid kernel image")
	if st := s.State(); st != fcapi.StateNotStarted {
		t.Fatalf("state after a failed start: %s", st)
	}
}

// rawJSON is a body the typed client sends as is, for bodies the fcapi
// types cannot produce.
type rawJSON string

func (j rawJSON) MarshalJSON() ([]byte, error) { return []byte(j), nil }

func TestBootLineAndSerial(t *testing.T) {
	t.Run("stdout", func(t *testing.T) {
		s := newSim(t)
		s.boot(t)
		out := s.stdout.String()
		if !strings.Contains(out, "Running Firecracker v1.16.1") {
			t.Errorf("no startup log line on stdout:\n%s", out)
		}
		// Firecracker's own additions: pci=off, the root drive, one
		// virtio-mmio device per device.
		if !strings.Contains(out, "kernel command line: console=ttyS0 reboot=k root=/dev/vda rw pci=off root=/dev/vda rw virtio_mmio.device=4K@0xc0001000:5\n") {
			t.Errorf("boot line is not the command line Firecracker builds:\n%s", out)
		}
	})
	t.Run("serial_out_path is overwritten, not appended", func(t *testing.T) {
		s := newSim(t)
		serial := filepath.Join(s.dir, "console.log")
		old := strings.Repeat("previous boot output\n", 20)
		if err := os.WriteFile(serial, []byte(old), 0o600); err != nil {
			t.Fatal(err)
		}
		s.put(t, "/serial", fcapi.SerialDevice{SerialOutPath: serial})
		s.boot(t)
		b, _ := os.ReadFile(serial)
		if len(b) != len(old) || !strings.HasPrefix(string(b), "fcsim: simulated guest booting") || !strings.HasSuffix(string(b), "previous boot output\n") {
			t.Fatalf("serial file should keep its size with the boot line written over its start (as Firecracker's open without O_APPEND does), got %d bytes:\n%s", len(b), b)
		}
	})
}

func TestCtrlAltDelExits(t *testing.T) {
	s := newSim(t)
	s.boot(t)
	s.put(t, "/actions", fcapi.InstanceActionInfo{ActionType: fcapi.ActionSendCtrlAltDel})
	select {
	case <-s.Exited():
	case <-time.After(2 * time.Second):
		t.Fatal("simulator did not exit after SendCtrlAltDel")
	}
	if !strings.Contains(s.stdout.String(), "reboot: Restarting system") {
		t.Errorf("no reset line on the console:\n%s", s.stdout.String())
	}
}

func TestLogger(t *testing.T) {
	s := newSim(t)
	logPath := filepath.Join(s.dir, "fc.log")
	s.put(t, "/logger", fcapi.Logger{LogPath: logPath, Level: "Off"})
	s.put(t, "/machine-config", fcapi.MachineConfiguration{VcpuCount: 2, MemSizeMib: 256})
	if b, _ := os.ReadFile(logPath); len(b) != 0 {
		t.Errorf("level Off still logged:\n%s", b)
	}
	s2 := newSim(t)
	logPath = filepath.Join(s2.dir, "fc.log")
	s2.put(t, "/logger", fcapi.Logger{LogPath: logPath, Level: "Info", ShowLevel: new(true)})
	s2.put(t, "/machine-config", fcapi.MachineConfiguration{VcpuCount: 2, MemSizeMib: 256})
	b, _ := os.ReadFile(logPath)
	want := `[sim-1:fc_api:INFO] The API server received a Put request on "/machine-config" with body "{\"vcpu_count\":2,\"mem_size_mib\":256}".`
	if !strings.Contains(string(b), want) {
		t.Errorf("log file lacks %s:\n%s", want, b)
	}
	wantFault(t, s.c.Put(ctx, "/logger", fcapi.Logger{LogPath: "/nonexistent/dir/log"}), "Failed to open target file")
}

func TestVsock(t *testing.T) {
	s := newSim(t)
	uds := filepath.Join(s.dir, "v.sock")
	s.guest.Handle(EchoPort, Echo)
	s.guest.Handle(GreetPort, Greet)
	s.put(t, "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: uds})

	// Listening from PUT /vsock on, but connections wait for the boot.
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatalf("vsock socket not listening after PUT /vsock: %v", err)
	}
	io.WriteString(c, "CONNECT 7\n")
	s.boot(t)
	line := readLine(t, c)
	if line != "OK 1073741824" {
		t.Fatalf("first answer %q, want OK 1073741824", line)
	}
	io.WriteString(c, "ping\n")
	if got := readLine(t, c); got != "ping" {
		t.Fatalf("echo %q", got)
	}

	// Host ports count up while connections stay open; case-insensitive.
	c2, _ := net.Dial("unix", uds)
	io.WriteString(c2, "connect 8\n")
	if got := readLine(t, c2); got != "OK 1073741825" {
		t.Fatalf("second answer %q", got)
	}
	if got := readLine(t, c2); got+"\n" != Greeting {
		t.Fatalf("greeting %q", got)
	}
	c.Close()
	c2.Close()

	for name, cmd := range map[string]string{
		"unregistered port": "CONNECT 9\n",
		"bad command":       "HELLO 7 xx\n",
		"over 32 bytes":     "CONNECT " + strings.Repeat("0", 30) + "7\n",
	} {
		c, err := net.Dial("unix", uds)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, cmd)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		// Closing with unread input makes the kernel send a reset.
		if errors.Is(err, syscall.ECONNRESET) {
			err = nil
		}
		if err != nil || len(b) != 0 {
			t.Errorf("%s: want the connection closed without an answer, got %q, %v", name, b, err)
		}
		c.Close()
	}

	// A stale file at uds_path makes PUT /vsock fail, as in Firecracker.
	s2 := newSim(t)
	stale := filepath.Join(s2.dir, "stale.sock")
	os.WriteFile(stale, nil, 0o600)
	wantFault(t, s2.c.Put(ctx, "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: stale}), "Address already in use (os error 98)")
}

// TestVsockBeforeListen: a guest whose service is not up yet refuses the
// connection; Firecracker closes it without OK.
func TestVsockBeforeListen(t *testing.T) {
	s := newSim(t)
	// Long enough that the first dial comes before it on a loaded host.
	const delay = 2 * time.Second
	s.guest.ListenDelay = delay
	s.guest.Handle(EchoPort, Echo)
	uds := filepath.Join(s.dir, "v.sock")
	s.put(t, "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: uds})
	booted := time.Now()
	s.boot(t)
	if _, err := firecracker.DialVsock(ctx, uds, EchoPort); !errors.Is(err, firecracker.ErrVsockRefused) {
		t.Fatalf("dial before the guest listens: %v, want refused", err)
	}
	for {
		c, err := firecracker.DialVsock(ctx, uds, EchoPort)
		if err == nil {
			c.Close()
			if since := time.Since(booted); since < delay {
				t.Fatalf("the guest accepted %v after boot, before it listens (%v)", since, delay)
			}
			return
		}
		if !errors.Is(err, firecracker.ErrVsockRefused) || time.Since(booted) > delay+10*time.Second {
			t.Fatalf("dial once the guest listens: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("read after %q: %v", b, err)
		}
		if one[0] == '\n' {
			return string(b)
		}
		b = append(b, one[0])
	}
}

func TestAPISocketExists(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "api.sock")
	os.WriteFile(p, nil, 0o600)
	if _, err := New(Options{APISock: p, ID: "x", Spec: loadSpec(t)}); err == nil || !strings.Contains(err.Error(), "Failed to open the API socket") {
		t.Fatalf("New over an existing path: %v", err)
	}
}
