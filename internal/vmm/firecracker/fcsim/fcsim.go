// Package fcsim is a Firecracker simulator for tests, following Firecracker
// v1.16.1's API specification and source. It is NOT Firecracker and never
// presents itself as such: it touches no KVM. It exists because the real
// binary cannot run on banger's build machines, and the Firecracker driver
// still needs something to talk to that judges it the way Firecracker
// would. What InstanceStart boots is a Guest: FakeGuest (in process, runs
// nothing) for unit tests, or QEMUGuest, which boots the configured kernel
// and disk for real under QEMU's microvm machine (see cmd/firecracker-simulator).
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
//     vsock, serial, ...) are refused after InstanceStart, post-boot-only ones
//     (SendCtrlAltDel, PATCH /vm, PATCH drives and interfaces) before it;
//     InstanceStart succeeds once and needs a boot source. PUT /drives and
//     PUT /network-interfaces after boot are hotplug, which 1.16.1 allows
//     only with PCI enabled (--enable-pci, which banger does not pass): they
//     fail with "PCI is not enabled". PATCH of an unknown drive or interface
//     is refused.
//   - PUT /boot-source opens the kernel and initrd and parses boot_args as
//     Firecracker's kernel command line (at most 2047 printable ASCII
//     bytes); InstanceStart loads the kernel as Firecracker's loader does
//     (an x86-64 ELF vmlinux, see package vmlinux) and builds the command
//     line Firecracker hands the guest: boot_args, "pci=off", root= and
//     rw/ro for the root drive, and a virtio_mmio.device= entry per device.
//   - PUT /drives opens the backing file (read-write unless read-only); PUT
//     /network-interfaces opens the TAP device by name through /dev/net/tun
//     with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, so the TAP must exist and belong
//     to the simulator's user, as for Firecracker; PUT /vsock binds uds_path
//     (and fails when the path exists).
//   - The hybrid vsock: uds_path accepts connections; "CONNECT <port>\n"
//     (read as Firecracker does: 10 bytes, then byte by byte up to 32) is
//     answered "OK <hostport>\n" with host ports from 1073741824 up when a
//     service in the guest listens on that port (Guest.Dial), and the
//     connection is then spliced to it; otherwise it is closed without an
//     answer. Before InstanceStart nothing is read.
//   - Serial output goes to the serial_out_path of PUT /serial, opened like
//     Firecracker opens it (created, written from offset 0, neither appended
//     nor truncated), or else to the simulator's stdout.
//   - The logger: lines "<time> [<id>:<thread>:<LEVEL>] <message>" (the
//     level shown when show_level is set), filtered by level (Off logs
//     nothing), to log_path once PUT /logger set one and to stdout before
//     that; request lines read like Firecracker's ("The API server received
//     a Put request on \"/actions\" with body ...").
//   - SendCtrlAltDel is delivered to the guest; when the guest ends (it
//     resets, powers off, or its VMM dies) the simulator ends (Exited), as
//     Firecracker does with reboot=k.
//   - Full snapshots: PUT /snapshot/create of a paused microVM and PUT
//     /snapshot/load into a fresh one, with network and vsock overrides
//     (see snapshot.go).
//
// Resources the specification has but the simulator does not model
// (balloon, mmds, diff snapshots, ...) are validated and then refused with a
// fault message that says so.
package fcsim

import (
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

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
	"github.com/bangerhq/banger/internal/vmm/firecracker/vmlinux"
)

// FirstHostPort is the first host-side port Firecracker assigns to a
// host-initiated vsock connection (1 << 30).
const FirstHostPort = 1 << 30

// maxPayload is Firecracker's default http-api-max-payload-size.
const maxPayload = 51200

// cmdlineMax is Firecracker's x86_64 CMDLINE_MAX_SIZE; the line and its
// terminating NUL must fit.
const cmdlineMax = 2048

// defaultCmdline is Firecracker's DEFAULT_KERNEL_CMDLINE, used when
// boot_args is absent.
const defaultCmdline = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

// DefaultDevTUN is the clone device Firecracker opens TAP devices through.
const DefaultDevTUN = "/dev/net/tun"

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
	// Guest is what InstanceStart boots. nil means a FakeGuest with its
	// defaults.
	Guest Guest
	// DevTUN is the TUN clone device TAPs are opened through; ""
	// means DefaultDevTUN. Tests point it at a device node of their own.
	DevTUN string
}

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
	logLevel   int
	showLevel  bool
	machine    fcapi.MachineConfiguration
	boot       *fcapi.BootSource
	restored   bool // by PUT /snapshot/load
	kernel     *os.File
	initrd     *os.File
	drives     map[string]*drive
	driveOrder []string
	ifaces     map[string]*iface
	ifaceOrder []string
	vsock      *fcapi.Vsock
	vsockLn    net.Listener
	serialPath string
	serialFile *os.File // opened at InstanceStart
	hostPorts  map[uint32]bool
	lastPort   uint32
	started    chan struct{}
	closed     chan struct{}
	closeOnce  sync.Once
	exitOnce   sync.Once
}

type drive struct {
	cfg  fcapi.Drive
	file *os.File
}

type iface struct {
	cfg fcapi.NetworkInterface
	tap *os.File
}

// Log levels, as Firecracker orders them (log::LevelFilter).
const (
	levelOff = iota
	levelError
	levelWarn
	levelInfo
	levelDebug
	levelTrace
)

var levelNames = map[string]int{"off": levelOff, "error": levelError, "warn": levelWarn, "warning": levelWarn,
	"info": levelInfo, "debug": levelDebug, "trace": levelTrace}

var levelLabels = []string{"", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}

// New creates the API socket and returns a server that is not yet serving.
// It fails, like Firecracker, when the socket path already exists.
func New(opts Options) (*Server, error) {
	if opts.Spec == nil {
		return nil, errors.New("fcsim: no specification")
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Guest == nil {
		opts.Guest = &FakeGuest{}
	}
	if opts.DevTUN == "" {
		opts.DevTUN = DefaultDevTUN
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
		logLevel:  levelInfo,
		machine:   fcapi.MachineConfiguration{VcpuCount: 1, MemSizeMib: 128},
		drives:    map[string]*drive{},
		ifaces:    map[string]*iface{},
		hostPorts: map[uint32]bool{},
		lastPort:  FirstHostPort - 1,
		started:   make(chan struct{}),
		closed:    make(chan struct{}),
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Serve answers API requests until Close; it returns nil after Close.
func (s *Server) Serve() error {
	s.logf(levelInfo, "main", "Running Firecracker v%s (fcsim: a Firecracker simulator for tests, NOT Firecracker)", fcapi.Version)
	s.logf(levelInfo, "main", "Listening on API socket (%q).", s.opts.APISock)
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Exited is closed when the simulated VMM ends by itself: its guest ended
// (reset after SendCtrlAltDel, powered off, or died). A process embedding
// the server exits then.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// State returns the instance state GET / reports.
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close stops serving and the guest, and closes the vsock listener, the
// log file and every file the configuration opened. It leaves the socket
// files in place, as an exiting Firecracker does.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.http.Close()
		s.opts.Guest.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.vsockLn != nil {
			s.vsockLn.Close()
		}
		if s.logFile != nil {
			s.logFile.Close()
		}
		for _, f := range s.openFilesLocked() {
			f.Close()
		}
	})
	return err
}

func (s *Server) openFilesLocked() []*os.File {
	var fs []*os.File
	for _, f := range []*os.File{s.kernel, s.initrd, s.serialFile} {
		if f != nil {
			fs = append(fs, f)
		}
	}
	for _, d := range s.drives {
		fs = append(fs, d.file)
	}
	for _, n := range s.ifaces {
		fs = append(fs, n.tap)
	}
	return fs
}

func (s *Server) logf(level int, thread, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logLocked(level, thread, format, args...)
}

// logLocked writes one log line the way Firecracker's logger formats it,
// unless level is filtered out.
func (s *Server) logLocked(level int, thread, format string, args ...any) {
	if level > s.logLevel {
		return
	}
	lv := ""
	if s.showLevel {
		lv = ":" + levelLabels[level]
	}
	fmt.Fprintf(s.logOut, "%s [%s:%s%s] %s\n", time.Now().Format("2006-01-02T15:04:05.000000000"), s.opts.ID, thread, lv, fmt.Sprintf(format, args...))
}

// apiError is a 400 answer with a fault message.
type apiError struct{ msg string }

// Error returns the fault message.
func (e *apiError) Error() string { return e.msg }

func fault(format string, args ...any) error { return &apiError{fmt.Sprintf(format, args...)} }

// Fault messages, as Firecracker words them.
var (
	errPostBoot   = "The requested operation is not supported after starting the microVM."
	errPreBoot    = "The requested operation is not supported before starting the microVM."
	errPCIEnabled = "PCI is not enabled"
)

var idRE = regexp.MustCompile(`^[\p{L}\p{N}_]+$`)

// pathIDField names the body field a path parameter must equal.
var pathIDField = map[string]string{"drive_id": "drive_id", "iface_id": "iface_id", "id": "id"}

// methodName is how Firecracker's request log names a method (Rust's
// Debug of its Method enum).
func methodName(m string) string {
	if m == "" {
		return m
	}
	return m[:1] + strings.ToLower(m[1:])
}

// describe words a request like Firecracker's request log line.
func describe(method, path string, body []byte) string {
	d := fmt.Sprintf("%s request on %s", methodName(method), strconv.Quote(path))
	if len(body) > 0 && path != "/mmds" {
		d += " with body " + strconv.Quote(string(body))
	}
	return d
}

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
		s.logf(levelInfo, "fc_api", "The API server received a %s.", describe(r.Method, r.URL.Path, body))
		out, err = s.handle(r.Method, r.URL.Path, body)
	}
	if err != nil {
		var ae *apiError
		msg := err.Error()
		if !errors.As(err, &ae) {
			msg = "fcsim internal error: " + msg
		}
		s.logf(levelError, "fc_api", "Received Error. Status code: 400 Bad Request. Message: %s", msg)
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
	case "GET /vm/config":
		return s.configLocked(), nil
	case "PUT /logger":
		if err := preBoot(); err != nil {
			return nil, err
		}
		return nil, s.loggerLocked(body)
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
		return nil, s.bootSourceLocked(body)
	case "PUT /drives/{drive_id}":
		if running {
			return nil, fault("%s", errPCIEnabled)
		}
		return nil, s.driveLocked(body)
	case "PATCH /drives/{drive_id}":
		if err := postBoot(); err != nil {
			return nil, err
		}
		if _, ok := s.drives[op.Params["drive_id"]]; !ok {
			return nil, fault("Drive config error: Unable to patch the block device: Device not found. Please verify the request arguments.")
		}
		return nil, nil
	case "PUT /network-interfaces/{iface_id}":
		if running {
			return nil, fault("%s", errPCIEnabled)
		}
		return nil, s.ifaceLocked(body)
	case "PATCH /network-interfaces/{iface_id}":
		if err := postBoot(); err != nil {
			return nil, err
		}
		if _, ok := s.ifaces[op.Params["iface_id"]]; !ok {
			return nil, fault("Network config error: Unable to update the net device: Failed perform action on device: Device not found")
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
			return nil, fault("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %s", OSError(err))
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
			s.logLocked(levelInfo, "fc_api", "fcsim: delivering CTRL+ALT+DEL to the guest")
			if err := s.opts.Guest.CtrlAltDel(); err != nil {
				return nil, fault("fcsim: deliver ctrl-alt-del to the guest: %v", err)
			}
			return nil, nil
		case fcapi.ActionFlushMetrics:
			if err := postBoot(); err != nil {
				return nil, err
			}
			return nil, nil
		}
		return nil, fault("fcsim: action %q is not simulated", a.ActionType)
	case "PUT /snapshot/create":
		if err := postBoot(); err != nil {
			return nil, err
		}
		return nil, s.snapshotCreateLocked(body)
	case "PUT /snapshot/load":
		if err := preBoot(); err != nil {
			return nil, err
		}
		return nil, s.snapshotLoadLocked(body)
	case "PATCH /vm":
		if err := postBoot(); err != nil {
			return nil, err
		}
		var v fcapi.VM
		decode(body, &v)
		if err := s.opts.Guest.Pause(v.State == fcapi.VMPaused); err != nil {
			return nil, fault("fcsim: pause or resume the guest: %v", err)
		}
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

func (s *Server) loggerLocked(body []byte) error {
	var l fcapi.Logger
	decode(body, &l)
	level := s.logLevel
	if l.Level != "" {
		lv, ok := levelNames[strings.ToLower(l.Level)]
		if !ok {
			return fault("Logger error: Invalid log level: %s", l.Level)
		}
		level = lv
	}
	if l.LogPath != "" {
		f, err := openLikeFirecracker(l.LogPath)
		if err != nil {
			return fault("Logger error: Failed to open target file: %s", OSError(err))
		}
		if s.logFile != nil {
			s.logFile.Close()
		}
		s.logFile, s.logOut = f, f
	}
	s.logLevel = level
	if l.ShowLevel != nil {
		s.showLevel = *l.ShowLevel
	}
	return nil
}

// configLocked is the answer to GET /vm/config: the microVM's devices as
// configured, or as restored from a snapshot (then without a boot source,
// and with the snapshot's vsock guest CID: vsock_override changes only the
// host socket).
func (s *Server) configLocked() fcapi.FullVMConfiguration {
	c := fcapi.FullVMConfiguration{MachineConfig: s.machine, Drives: []fcapi.Drive{}, NetworkInterfaces: []fcapi.NetworkInterface{}, Vsock: s.vsock}
	if !s.restored {
		c.BootSource = s.boot
	}
	for _, id := range s.driveOrder {
		c.Drives = append(c.Drives, s.drives[id].cfg)
	}
	for _, id := range s.ifaceOrder {
		c.NetworkInterfaces = append(c.NetworkInterfaces, s.ifaces[id].cfg)
	}
	return c
}

// bootSourceLocked opens the kernel and initrd, and parses boot_args as
// Firecracker does (BootConfig::new).
func (s *Server) bootSourceLocked(body []byte) error {
	var b fcapi.BootSource
	decode(body, &b)
	kernel, err := os.Open(b.KernelImagePath)
	if err != nil {
		return fault("Boot source error: The kernel file cannot be opened: %s", OSError(err))
	}
	var initrd *os.File
	if b.InitrdPath != "" {
		if initrd, err = os.Open(b.InitrdPath); err != nil {
			kernel.Close()
			return fault("Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. %s", OSError(err))
		}
	}
	args := defaultCmdline
	if b.BootArgs != "" {
		args = b.BootArgs
	}
	if err := checkCmdline(args); err != nil {
		kernel.Close()
		if initrd != nil {
			initrd.Close()
		}
		return fault("Boot source error: The kernel command line is invalid: %v", err)
	}
	for _, f := range []*os.File{s.kernel, s.initrd} {
		if f != nil {
			f.Close()
		}
	}
	s.boot, s.kernel, s.initrd = &b, kernel, initrd
	return nil
}

// checkCmdline applies linux-loader's Cmdline rules: printable ASCII only,
// and the line plus its NUL within cmdlineMax bytes.
func checkCmdline(line string) error {
	for i := 0; i < len(line); i++ {
		if line[i] < ' ' || line[i] > '~' {
			return errors.New("String contains a non-printable ASCII character.")
		}
	}
	if len(line)+1 > cmdlineMax {
		return errors.New("Inserting string would make command line too long.")
	}
	return nil
}

// driveLocked opens the drive's backing file as Firecracker's block device
// does.
func (s *Server) driveLocked(body []byte) error {
	var d fcapi.Drive
	decode(body, &d)
	if d.IsRootDevice {
		for id, o := range s.drives {
			if o.cfg.IsRootDevice && id != d.DriveID {
				return fault("Drive config error: A root block device already exists!")
			}
		}
	}
	if d.PathOnHost == "" {
		return fault("fcsim: vhost-user drives are not simulated")
	}
	flag := os.O_RDWR
	if d.IsReadOnly != nil && *d.IsReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.PathOnHost, flag, 0)
	if err != nil {
		return fault("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %s %s", OSError(err), d.PathOnHost)
	}
	if old, ok := s.drives[d.DriveID]; ok {
		old.file.Close()
	} else {
		s.driveOrder = append(s.driveOrder, d.DriveID)
	}
	s.drives[d.DriveID] = &drive{cfg: d, file: f}
	return nil
}

// ifaceLocked opens the TAP device as Firecracker's Tap::open_named does.
func (s *Server) ifaceLocked(body []byte) error {
	var n fcapi.NetworkInterface
	decode(body, &n)
	if n.GuestMAC != "" {
		if _, err := net.ParseMAC(n.GuestMAC); err != nil || len(n.GuestMAC) != 17 {
			return fault("An error occurred when deserializing the json body of a request: invalid MAC address %q.", n.GuestMAC)
		}
	}
	for id, o := range s.ifaces {
		if id == n.IfaceID {
			continue
		}
		if o.cfg.HostDevName == n.HostDevName {
			// The kernel refuses a second TUNSETIFF on a TAP without
			// IFF_MULTI_QUEUE: Firecracker fails in Tap::open_named.
			return fault("Network config error: Could not create the network device: Open tap device failed: Error while creating ifreq structure: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", OSError(unix.EBUSY), n.HostDevName)
		}
		if n.GuestMAC != "" && strings.EqualFold(o.cfg.GuestMAC, n.GuestMAC) {
			return fault("Network config error: The MAC address is already in use: %s", n.GuestMAC)
		}
	}
	tap, err := openTAP(s.opts.DevTUN, n.HostDevName)
	if err != nil {
		return fault("Network config error: Could not create the network device: Open tap device failed: %v", err)
	}
	if old, ok := s.ifaces[n.IfaceID]; ok {
		old.tap.Close()
	} else {
		s.ifaceOrder = append(s.ifaceOrder, n.IfaceID)
	}
	s.ifaces[n.IfaceID] = &iface{cfg: n, tap: tap}
	return nil
}

// openTAP opens the TAP device name through devTUN with Firecracker's
// flags. The kernel lets only the TAP's owner (or CAP_NET_ADMIN) attach,
// and creates a new TAP when none has that name, which needs CAP_NET_ADMIN
// too; Firecracker runs without it, and so must the simulator for the
// check to mean anything.
func openTAP(devTUN, name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, errors.New("Invalid interface name")
	}
	fd, err := unix.Open(devTUN, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("Couldn't open /dev/net/tun: %s", OSError(err))
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, errors.New("Invalid interface name")
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	err = nil
	if _, lerr := net.InterfaceByName(name); lerr != nil {
		// TUNSETIFF on a name that is no device creates one, which
		// needs CAP_NET_ADMIN: Firecracker, without it, gets EPERM. A
		// simulator running as root must not succeed there.
		err = unix.EPERM
	} else {
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("Error while creating ifreq structure: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", OSError(err), name)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// openLikeFirecracker opens p the way Firecracker opens its log and serial
// output files (utils::open_file_nonblock): created if missing, read-write,
// non-blocking, and neither appended to nor truncated.
func openLikeFirecracker(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NONBLOCK, 0o666)
}

// OSError words err like Rust's io::Error: "No such file or directory (os
// error 2)".
func OSError(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:] + " (os error " + strconv.Itoa(int(errno)) + ")"
	}
	return err.Error()
}

// MMIO layout of Firecracker v1.16.1 on x86_64 without PCI: virtio devices
// get 4 KiB slots from 0xc0001000 and interrupts from 5, in the order
// block, net, vsock (builder.rs).
const (
	mmioBase = 0xc0001000
	mmioSize = 0x1000
	firstIRQ = 5
)

// cmdlineLocked is the kernel command line Firecracker hands the guest:
// boot_args (or its default), "pci=off", root= and rw/ro for the root
// drive, then a virtio_mmio.device= entry per device, each appended with
// the length check of linux-loader's Cmdline.
func (s *Server) cmdlineLocked() (string, error) {
	line := defaultCmdline
	if s.boot.BootArgs != "" {
		line = s.boot.BootArgs
	}
	var errTooLong error
	add := func(part string) {
		if errTooLong == nil {
			if len(line)+1+len(part)+1 > cmdlineMax {
				errTooLong = errors.New("Inserting string would make command line too long.")
				return
			}
			line += " " + part
		}
	}
	add("pci=off")
	slot := 0
	device := func() {
		add(fmt.Sprintf("virtio_mmio.device=4K@0x%x:%d", mmioBase+slot*mmioSize, firstIRQ+slot))
		slot++
	}
	for _, id := range s.driveOrder {
		d := s.drives[id].cfg
		if d.IsRootDevice {
			if d.PartUUID != "" {
				add("root=PARTUUID=" + d.PartUUID)
			} else {
				add("root=/dev/vda")
			}
			if d.IsReadOnly != nil && *d.IsReadOnly {
				add("ro")
			} else {
				add("rw")
			}
		}
		device()
	}
	for range s.ifaceOrder {
		device()
	}
	if s.vsock != nil {
		device()
	}
	return line, errTooLong
}

func (s *Server) startLocked() error {
	if s.boot == nil {
		return fault("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	if _, err := vmlinux.CheckReader(s.kernel); err != nil {
		return fault("Start microvm error: System configuration error: Cannot load kernel due to invalid memory configuration or invalid kernel image: %v", err)
	}
	line, err := s.cmdlineLocked()
	if err != nil {
		return fault("Start microvm error: Invalid kernel command line: %v", err)
	}
	serial := s.opts.Stdout
	if s.serialPath != "" {
		f, err := openLikeFirecracker(s.serialPath)
		if err != nil {
			return fault("Start microvm error: Failed to create device manager: Error opening serial output %s: %s", s.serialPath, OSError(err))
		}
		s.serialFile, serial = f, f
	}
	cfg := BootConfig{
		ID: s.opts.ID, Kernel: s.kernel, Initrd: s.initrd, Cmdline: line,
		VCPUs: s.machine.VcpuCount, MemMiB: s.machine.MemSizeMib, Serial: serial,
	}
	for _, id := range s.driveOrder {
		d := s.drives[id]
		cfg.Drives = append(cfg.Drives, BootDrive{ID: id, Path: d.cfg.PathOnHost, File: d.file, ReadOnly: d.cfg.IsReadOnly != nil && *d.cfg.IsReadOnly})
	}
	for _, id := range s.ifaceOrder {
		n := s.ifaces[id]
		cfg.Nets = append(cfg.Nets, BootNet{ID: id, TAP: n.tap, MAC: n.cfg.GuestMAC})
	}
	if s.vsock != nil {
		cfg.VsockCID = s.vsock.GuestCID
	}
	if err := s.opts.Guest.Boot(cfg); err != nil {
		return fault("Start microvm error: fcsim: boot the guest: %v", err)
	}
	s.state = fcapi.StateRunning
	s.runningLocked()
	s.logLocked(levelInfo, "fc_api", "Successfully started microvm that was configured from one single json")
	return nil
}

// runningLocked marks the microVM started (booted or restored): the vsock
// socket is served, and the simulator ends when its guest does.
func (s *Server) runningLocked() {
	close(s.started)
	go func() {
		select {
		case <-s.opts.Guest.Done():
			s.logf(levelInfo, "main", "Vmm is stopping.")
			s.exitOnce.Do(func() { close(s.exited) })
		case <-s.closed:
		}
	}()
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
		s.logf(levelWarn, "fc_vmm", "vsock: error adding local-init connection: %v", err)
		c.Close()
		return
	}
	g, err := s.opts.Guest.Dial(port)
	if err != nil {
		// The guest answers the connection request with a reset.
		s.logf(levelDebug, "fc_vmm", "vsock: guest refused port %d: %v", port, err)
		c.Close()
		return
	}
	s.mu.Lock()
	hostPort := s.allocatePortLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.hostPorts, hostPort)
		s.mu.Unlock()
		c.Close()
		g.Close()
	}()
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		return
	}
	splice(c, g)
}

// splice copies both ways until either side ends, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
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
