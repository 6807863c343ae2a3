// Package fcsim is a Firecracker API simulator for tests, following the
// v1.16.1 specification's rules. It is NOT Firecracker: it runs no guest
// and touches no KVM. It exists because the real binary cannot be installed
// on banger's build machines, and the Firecracker driver still needs
// something to talk to that judges its requests the way Firecracker would.
//
// What it simulates, modelled on Firecracker v1.16.1's source:
//
//   - HTTP/1.1 over a Unix socket (the API socket; binding fails when the
//     path exists); success is 204 without a body, GET answers 200 with
//     JSON, every error is 400 with {"fault_message": "..."}.
//   - Every request body is validated against the specification with
//     unknown and duplicate fields rejected (package fcspec), and the
//     simulator checks its own responses against it too.
//   - Resource ids in paths must be letters, digits and '_' and equal the
//     id in the body.
//   - Pre-boot-only resources (logger, metrics, machine-config, boot-source,
//     drives, network-interfaces, vsock, serial, ...) are refused after
//     InstanceStart, post-boot-only ones (SendCtrlAltDel, PATCH /vm, PATCH
//     drives and interfaces) before it; InstanceStart succeeds once and
//     needs a boot source.
//   - PUT /boot-source checks that the kernel and initrd files open, PUT
//     /drives that the backing file opens, PUT /vsock binds uds_path (and
//     fails when the path exists).
//   - The hybrid vsock: uds_path accepts connections; "CONNECT <port>\n"
//     (read as Firecracker does: 10 bytes, then byte by byte up to 32) is
//     answered "OK <hostport>\n" with host ports from 1073741824 up when a
//     simulated guest service listens on that port (HandleGuestPort), and
//     the connection is then handed to it; otherwise it is closed without
//     an answer.
//   - At InstanceStart a fake boot line, with the kernel command line
//     Firecracker would pass (boot_args plus root=/dev/vda rw), goes to the
//     serial output: the serial_out_path of PUT /serial, opened like
//     Firecracker opens it (created, written from offset 0, neither
//     appended nor truncated), or else the simulator's stdout.
//   - SendCtrlAltDel makes the simulated guest reset after a short delay,
//     which ends the simulator (Exited), as reboot=k ends Firecracker.
//
// Log lines go to the logger's log_path once PUT /logger set one, and to
// stdout before that, like Firecracker. Resources the specification has
// but the simulator does not model (balloon, mmds, snapshots, ...) are
// validated and then refused with a fault message that says so.
package fcsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// FirstHostPort is the first host-side port Firecracker assigns to a
// host-initiated vsock connection (1 << 30).
const FirstHostPort = 1 << 30

// DefaultResetDelay is how long the simulated guest takes to reset after
// SendCtrlAltDel.
const DefaultResetDelay = 100 * time.Millisecond

// maxPayload is Firecracker's default http-api-max-payload-size.
const maxPayload = 51200

// Options configure a Server.
type Options struct {
	// APISock is the path of the API socket to create. It must not exist.
	APISock string
	// ID is the instance id reported by GET /.
	ID string
	// Spec is the specification requests are validated against.
	Spec *fcspec.Spec
	// Stdout stands for the process's stdout: log lines before PUT /logger
	// and the serial console when PUT /serial was not used. nil discards.
	Stdout io.Writer
	// ResetDelay is how long after SendCtrlAltDel the simulated guest
	// resets; 0 means DefaultResetDelay.
	ResetDelay time.Duration
	// IgnoreCtrlAltDel makes the simulated guest ignore SendCtrlAltDel (the
	// request still succeeds), like a guest whose init turned off the
	// kernel's reboot on ctrl-alt-del and does nothing itself.
	IgnoreCtrlAltDel bool
}

// GuestHandler serves one host-initiated vsock connection in the simulated
// guest. The simulator closes conn when the handler returns.
type GuestHandler func(conn net.Conn)

// Server is a simulated Firecracker API server. Create it with New, run it
// with Serve, stop it with Close. It is safe for concurrent use.
type Server struct {
	opts   Options
	ln     net.Listener
	http   *http.Server
	exited chan struct{}

	mu         sync.Mutex
	state      string // fcapi.StateNotStarted, StateRunning or StatePaused
	logOut     io.Writer
	logFile    *os.File
	machine    fcapi.MachineConfiguration
	boot       *fcapi.BootSource
	drives     map[string]fcapi.Drive
	driveOrder []string
	ifaces     map[string]fcapi.NetworkInterface
	vsock      *fcapi.Vsock
	vsockLn    net.Listener
	serialPath string
	guest      map[uint32]GuestHandler
	hostPorts  map[uint32]bool
	lastPort   uint32
	started    chan struct{}
	closed     chan struct{}
	closeOnce  sync.Once
	exitOnce   sync.Once
}

// New creates the API socket and returns a server that is not yet serving.
// It fails, like Firecracker, when the socket path already exists.
func New(opts Options) (*Server, error) {
	if opts.Spec == nil {
		return nil, errors.New("fcsim: no specification")
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.ResetDelay <= 0 {
		opts.ResetDelay = DefaultResetDelay
	}
	ln, err := net.Listen("unix", opts.APISock)
	if err != nil {
		return nil, fmt.Errorf("Failed to open the API socket at: %s. Check that it is not already used: %w", opts.APISock, err)
	}
	// Firecracker leaves its socket files behind when it exits.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	s := &Server{
		opts:      opts,
		ln:        ln,
		exited:    make(chan struct{}),
		state:     fcapi.StateNotStarted,
		logOut:    opts.Stdout,
		machine:   fcapi.MachineConfiguration{VcpuCount: 1, MemSizeMib: 128},
		drives:    map[string]fcapi.Drive{},
		ifaces:    map[string]fcapi.NetworkInterface{},
		guest:     map[uint32]GuestHandler{},
		hostPorts: map[uint32]bool{},
		lastPort:  FirstHostPort - 1,
		started:   make(chan struct{}),
		closed:    make(chan struct{}),
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// HandleGuestPort makes the simulated guest listen on vsock port: host
// connections to it are answered OK and handed to h.
func (s *Server) HandleGuestPort(port uint32, h GuestHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guest[port] = h
}

// Serve answers API requests until Close; it returns nil after Close.
func (s *Server) Serve() error {
	s.logf("Running Firecracker v%s (fcsim: a Firecracker API simulator for tests, NOT Firecracker)", fcapi.Version)
	s.logf("Listening on API socket (%q).", s.opts.APISock)
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Exited is closed when the simulated VMM ends by itself: the guest reset
// after SendCtrlAltDel. A process embedding the server exits then.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// State returns the instance state GET / reports.
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close stops serving and closes the vsock listener and the log file. It
// leaves the socket files in place, as an exiting Firecracker does.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.http.Close()
		s.mu.Lock()
		if s.vsockLn != nil {
			s.vsockLn.Close()
		}
		if s.logFile != nil {
			s.logFile.Close()
		}
		s.mu.Unlock()
	})
	return err
}

func (s *Server) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logLocked(format, args...)
}

func (s *Server) logLocked(format string, args ...any) {
	fmt.Fprintf(s.logOut, "%s [%s:fc_api] %s\n", time.Now().Format("2006-01-02T15:04:05.000000000"), s.opts.ID, fmt.Sprintf(format, args...))
}

// apiError is a 400 answer with a fault message.
type apiError struct{ msg string }

// Error returns the fault message.
func (e *apiError) Error() string { return e.msg }

func fault(format string, args ...any) error { return &apiError{fmt.Sprintf(format, args...)} }

// Fault messages, as Firecracker words them.
var (
	errPostBoot = "The requested operation is not supported after starting the microVM."
	errPreBoot  = "The requested operation is not supported before starting the microVM."
)

var idRE = regexp.MustCompile(`^[\p{L}\p{N}_]+$`)

// pathIDField names the body field a path parameter must equal.
var pathIDField = map[string]string{"drive_id": "drive_id", "iface_id": "iface_id", "id": "id"}

// ServeHTTP handles one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		s.reply(w, r, http.StatusBadRequest, fcapi.Error{FaultMessage: "fcsim: read request: " + err.Error()})
		return
	}
	var out any
	if len(body) > maxPayload {
		err = fault("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), maxPayload)
	} else {
		out, err = s.handle(r.Method, r.URL.Path, body)
	}
	s.logf("The API server received a %s request on %q.", r.Method, r.URL.Path)
	if err != nil {
		var ae *apiError
		msg := err.Error()
		if !errors.As(err, &ae) {
			msg = "fcsim internal error: " + msg
		}
		s.logf("Received Error. Status code: 400 Bad Request. Message: %s", msg)
		s.reply(w, r, http.StatusBadRequest, fcapi.Error{FaultMessage: msg})
		return
	}
	if out == nil {
		s.reply(w, r, http.StatusNoContent, nil)
		return
	}
	s.reply(w, r, http.StatusOK, out)
}

// reply writes status and body, after checking that the response follows
// the specification: a simulator that answered what Firecracker cannot
// would make tests pass for the wrong reason.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, v any) {
	var b []byte
	if v != nil {
		b, _ = json.Marshal(v)
	}
	if err := s.opts.Spec.ValidateResponse(r.Method, r.URL.Path, status, b); err != nil && !errors.Is(err, fcspec.ErrNoRoute) {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(fcapi.Error{FaultMessage: "fcsim bug: response does not follow the specification: " + err.Error()})
	}
	if b != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Server) handle(method, path string, body []byte) (any, error) {
	empty := len(bytes.TrimSpace(body)) == 0
	switch method {
	case http.MethodGet:
		if !empty {
			return nil, fault("GET request cannot have a body.")
		}
	case http.MethodPut, http.MethodPatch:
		if empty {
			return nil, fault("Empty %s request.", method)
		}
	default:
		return nil, fault("Invalid request method and/or path: %s %s.", method, path)
	}
	op, err := s.opts.Spec.Match(method, path)
	if err != nil {
		return nil, fault("Invalid request method and/or path: %s %s.", method, path)
	}
	if err := s.opts.Spec.ValidateRequest(method, path, body); err != nil {
		return nil, fault("An error occurred when deserializing the json body of a request: %v.", err)
	}
	for param, value := range op.Params {
		if !idRE.MatchString(value) {
			return nil, fault("API Resource IDs can only contain alphanumeric characters and underscores.")
		}
		var ids map[string]any
		json.Unmarshal(body, &ids)
		if field, ok := pathIDField[param]; ok && ids[field] != value {
			return nil, fault("The id from the path does not match the id from the body!")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	running := s.state != fcapi.StateNotStarted
	preBoot := func() error {
		if running {
			return fault("%s", errPostBoot)
		}
		return nil
	}
	postBoot := func() error {
		if !running {
			return fault("%s", errPreBoot)
		}
		return nil
	}
	switch method + " " + op.Template {
	case "GET /":
		return fcapi.InstanceInfo{AppName: fcapi.AppName, ID: s.opts.ID, State: s.state, VMMVersion: fcapi.Version}, nil
	case "GET /version":
		return fcapi.FirecrackerVersion{FirecrackerVersion: fcapi.Version}, nil
	case "GET /machine-config":
		return s.machine, nil
	case "PUT /logger":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var l fcapi.Logger
		decode(body, &l)
		if l.LogPath != "" {
			f, err := openLikeFirecracker(l.LogPath)
			if err != nil {
				return nil, fault("Logger error: Failed to open target file: %s", osError(err))
			}
			if s.logFile != nil {
				s.logFile.Close()
			}
			s.logFile, s.logOut = f, f
		}
		return nil, nil
	case "PUT /machine-config":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var m fcapi.MachineConfiguration
		decode(body, &m)
		s.machine = m
		return nil, nil
	case "PUT /boot-source":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var b fcapi.BootSource
		decode(body, &b)
		if err := canOpen(b.KernelImagePath, os.O_RDONLY); err != nil {
			return nil, fault("Boot source error: The kernel file cannot be opened: %s", osError(err))
		}
		if b.InitrdPath != "" {
			if err := canOpen(b.InitrdPath, os.O_RDONLY); err != nil {
				return nil, fault("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. %s", osError(err))
			}
		}
		s.boot = &b
		return nil, nil
	case "PUT /drives/{drive_id}":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var d fcapi.Drive
		decode(body, &d)
		if d.IsRootDevice {
			for id, o := range s.drives {
				if o.IsRootDevice && id != d.DriveID {
					return nil, fault("Drive config error: A root block device already exists!")
				}
			}
		}
		if d.PathOnHost == "" {
			return nil, fault("fcsim: vhost-user drives are not simulated")
		}
		flag := os.O_RDWR
		if d.IsReadOnly != nil && *d.IsReadOnly {
			flag = os.O_RDONLY
		}
		if err := canOpen(d.PathOnHost, flag); err != nil {
			return nil, fault("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %s %s", osError(err), d.PathOnHost)
		}
		if _, ok := s.drives[d.DriveID]; !ok {
			s.driveOrder = append(s.driveOrder, d.DriveID)
		}
		s.drives[d.DriveID] = d
		return nil, nil
	case "PATCH /drives/{drive_id}":
		if err := postBoot(); err != nil {
			return nil, err
		}
		if _, ok := s.drives[op.Params["drive_id"]]; !ok {
			return nil, fault("Drive config error: Unable to patch the block device: Device not found. Please verify the request arguments.")
		}
		return nil, nil
	case "PUT /network-interfaces/{iface_id}":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var n fcapi.NetworkInterface
		decode(body, &n)
		if n.GuestMAC != "" {
			if _, err := net.ParseMAC(n.GuestMAC); err != nil || len(n.GuestMAC) != 17 {
				return nil, fault("An error occurred when deserializing the json body of a request: invalid MAC address %q.", n.GuestMAC)
			}
		}
		for id, o := range s.ifaces {
			if id != n.IfaceID && o.HostDevName == n.HostDevName {
				return nil, fault("Network config error: The host device name %s is already in use.", n.HostDevName)
			}
		}
		s.ifaces[n.IfaceID] = n
		return nil, nil
	case "PATCH /network-interfaces/{iface_id}":
		if err := postBoot(); err != nil {
			return nil, err
		}
		return nil, nil
	case "PUT /vsock":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var v fcapi.Vsock
		decode(body, &v)
		ln, err := net.Listen("unix", v.UDSPath)
		if err != nil {
			return nil, fault("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %s", osError(err))
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		if s.vsockLn != nil {
			s.vsockLn.Close()
		}
		s.vsock, s.vsockLn = &v, ln
		go s.acceptVsock(ln)
		return nil, nil
	case "PUT /serial":
		if err := preBoot(); err != nil {
			return nil, err
		}
		var sd fcapi.SerialDevice
		decode(body, &sd)
		s.serialPath = sd.SerialOutPath
		return nil, nil
	case "PUT /actions":
		var a fcapi.InstanceActionInfo
		decode(body, &a)
		switch a.ActionType {
		case fcapi.ActionInstanceStart:
			if err := preBoot(); err != nil {
				return nil, err
			}
			return nil, s.startLocked()
		case fcapi.ActionSendCtrlAltDel:
			if err := postBoot(); err != nil {
				return nil, err
			}
			if s.opts.IgnoreCtrlAltDel {
				s.logLocked("Sending CTRL+ALT+DEL to the simulated guest; it ignores it")
				return nil, nil
			}
			s.logLocked("Sending CTRL+ALT+DEL to the simulated guest; it resets in %v", s.opts.ResetDelay)
			time.AfterFunc(s.opts.ResetDelay, s.reset)
			return nil, nil
		case fcapi.ActionFlushMetrics:
			if err := postBoot(); err != nil {
				return nil, err
			}
			return nil, nil
		}
		return nil, fault("fcsim: action %q is not simulated", a.ActionType)
	case "PATCH /vm":
		if err := postBoot(); err != nil {
			return nil, err
		}
		var v fcapi.VM
		decode(body, &v)
		if v.State == fcapi.VMPaused {
			s.state = fcapi.StatePaused
		} else {
			s.state = fcapi.StateRunning
		}
		return nil, nil
	}
	return nil, fault("fcsim: %s %s (%s) is in the specification but not simulated", method, op.Template, op.ID)
}

func decode(body []byte, v any) {
	// The body has been validated against the specification already.
	json.Unmarshal(body, v)
}

// openLikeFirecracker opens p the way Firecracker opens its log and serial
// output files (utils::open_file_nonblock): created if missing, read-write,
// non-blocking, and neither appended to nor truncated.
func openLikeFirecracker(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NONBLOCK, 0o666)
}

func canOpen(p string, flag int) error {
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// osError words err like Rust's io::Error: "No such file or directory (os
// error 2)".
func osError(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:] + " (os error " + strconv.Itoa(int(errno)) + ")"
	}
	return err.Error()
}

// cmdline is the kernel command line Firecracker would hand the guest:
// boot_args, then root= and rw/ro for the root drive. (On x86 Firecracker
// also appends virtio_mmio.device= entries; the simulator leaves them out.)
func (s *Server) cmdline() string {
	args := s.boot.BootArgs
	if args == "" {
		args = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"
	}
	for _, id := range s.driveOrder {
		d := s.drives[id]
		if !d.IsRootDevice {
			continue
		}
		if d.PartUUID != "" {
			args += " root=PARTUUID=" + d.PartUUID
		} else {
			args += " root=/dev/vda"
		}
		if d.IsReadOnly != nil && *d.IsReadOnly {
			args += " ro"
		} else {
			args += " rw"
		}
	}
	return args
}

func (s *Server) startLocked() error {
	if s.boot == nil {
		return fault("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	if err := s.serialLocked("fcsim: simulated guest booting (no kernel runs); kernel command line: %s\n", s.cmdline()); err != nil {
		return fault("Start microvm error: %v", err)
	}
	s.state = fcapi.StateRunning
	close(s.started)
	s.logLocked("Successfully started microvm that was configured from one single json")
	return nil
}

// serialLocked writes to the simulated serial console.
func (s *Server) serialLocked(format string, args ...any) error {
	if s.serialPath == "" {
		_, err := fmt.Fprintf(s.opts.Stdout, format, args...)
		return err
	}
	f, err := openLikeFirecracker(s.serialPath)
	if err != nil {
		return fmt.Errorf("Error opening serial output %s: %s", s.serialPath, osError(err))
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, format, args...)
	return err
}

// reset is the simulated guest's reset after ctrl-alt-del: with reboot=k
// Firecracker then exits.
func (s *Server) reset() {
	s.mu.Lock()
	s.serialLocked("reboot: Restarting system\n")
	s.logLocked("Vmm is stopping.")
	s.mu.Unlock()
	s.exitOnce.Do(func() { close(s.exited) })
}

func (s *Server) acceptVsock(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.serveVsock(c)
	}
}

// serveVsock handles one host-initiated connection on the vsock socket.
func (s *Server) serveVsock(c net.Conn) {
	// Firecracker only polls the socket once the microVM runs.
	select {
	case <-s.started:
	case <-s.closed:
		c.Close()
		return
	}
	port, err := readConnect(c)
	if err != nil {
		s.logf("vsock: error adding local-init connection: %v", err)
		c.Close()
		return
	}
	s.mu.Lock()
	h := s.guest[port]
	var hostPort uint32
	if h != nil {
		hostPort = s.allocatePortLocked()
	}
	s.mu.Unlock()
	if h == nil {
		// The guest answers the connection request with a reset.
		c.Close()
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.hostPorts, hostPort)
		s.mu.Unlock()
		c.Close()
	}()
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		return
	}
	h(c)
}

// allocatePortLocked hands out host ports round robin in [1<<30, 1<<31).
func (s *Server) allocatePortLocked() uint32 {
	for {
		s.lastPort = (s.lastPort+1)&^(1<<31) | (1 << 30)
		if !s.hostPorts[s.lastPort] {
			s.hostPorts[s.lastPort] = true
			return s.lastPort
		}
	}
}

// readConnect reads a "connect <port>\n" command the way Firecracker does:
// the first 10 bytes at once (the shortest valid command is "connect 0\n"),
// then one byte at a time until a newline or 32 bytes in all; the command
// word is case-insensitive.
func readConnect(c net.Conn) (uint32, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 32)
	const minRead = 10
	if _, err := io.ReadFull(c, buf[:minRead]); err != nil {
		return 0, fmt.Errorf("UnixRead(%v)", err)
	}
	n := minRead
	for buf[n-1] != '\n' && n < len(buf) {
		if _, err := io.ReadFull(c, buf[n:n+1]); err != nil {
			return 0, fmt.Errorf("UnixRead(%v)", err)
		}
		n++
	}
	words := strings.Fields(string(buf[:n]))
	if len(words) < 2 || strings.ToLower(words[0]) != "connect" {
		return 0, errors.New("InvalidPortRequest")
	}
	port, err := strconv.ParseUint(words[1], 10, 32)
	if err != nil {
		return 0, errors.New("InvalidPortRequest")
	}
	return uint32(port), nil
}

// Echo is a GuestHandler that echoes what it reads.
func Echo(c net.Conn) { io.Copy(c, c) }

// Greeting is what Greet sends first.
const Greeting = "hello from the fcsim guest\n"

// Greet is a GuestHandler that sends Greeting at once, before reading
// anything, then echoes lines. It catches a host side that reads past the
// handshake's OK line.
func Greet(c net.Conn) {
	io.WriteString(c, Greeting)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		fmt.Fprintf(c, "%s\n", sc.Text())
	}
}

// Guest ports the fake-firecracker binary serves.
const (
	EchoPort  = 7
	GreetPort = 8
)
