package fcsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// LauncherFDEnv names, in a jailed simulator's environment, its inherited
// descriptor of a launcher (see Launcher): the jailer simulator sets it.
const LauncherFDEnv = "FCSIM_LAUNCHER_FD"

// A Launcher starts the guest's QEMU for a QEMUGuest: argv (argv[0] a
// path, or a bare name looked up as FindQEMU does) with files as its
// descriptors 3, 4, ..., its output to log. wait blocks until QEMU exits
// and returns its status.
//
// Firecracker runs the guest in its own process; the simulator, which
// stands for the machine too, runs it under QEMU. Unjailed, the simulator
// starts QEMU itself (LocalLauncher). Jailed, it cannot: QEMU is not in
// its chroot, and it runs without privilege. The jailer simulator then
// hands it one descriptor, a socket to a launcher it left outside the jail
// (RemoteLauncher, ServeLaunches), to which the simulator passes the
// descriptors it opened inside the jail as Firecracker would (kernel,
// disk, TAP), and nothing else: the jailed simulator opens everything by
// its chroot path.
type Launcher interface {
	Launch(argv []string, files []*os.File, log io.Writer) (wait func() error, err error)
}

// LocalLauncher starts QEMU as a child of this process, which dies with
// it (PDEATHSIG), as the guest dies with Firecracker.
type LocalLauncher struct{}

// Launch starts argv.
func (LocalLauncher) Launch(argv []string, files []*os.File, log io.Writer) (func() error, error) {
	_, wait, err := startQEMU(argv, files, log)
	return wait, err
}

// startQEMU starts argv with files, QEMU dying with the thread that
// started it (kept until QEMU exits), and returns it and its wait.
func startQEMU(argv []string, files []*os.File, log io.Writer) (*os.Process, func() error, error) {
	bin, err := resolveQEMU(argv[0])
	if err != nil {
		return nil, nil, err
	}
	started := make(chan error, 1)
	done := make(chan error, 1)
	var p *os.Process
	go func() {
		// PDEATHSIG fires when the thread that forked QEMU ends: keep it
		// until QEMU has exited.
		runtime.LockOSThread()
		cmd := exec.Command(bin, argv[1:]...)
		cmd.ExtraFiles = files
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p = cmd.Process
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	return p, func() error { return <-done }, nil
}

// FindQEMU looks for qemu-system-x86_64 in $PATH, then in the usual
// folders (the driver gives its VMM an empty environment).
func FindQEMU() (string, error) { return resolveQEMU("qemu-system-x86_64") }

func resolveQEMU(name string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH, /usr/local/bin, /usr/bin or /bin", name)
}

// launchMsg is the launcher protocol: a request carries Argv (and the
// descriptors, SCM_RIGHTS); the replies are PID or Error, then Exited.
type launchMsg struct {
	Argv   []string `json:"argv,omitempty"`
	PID    int      `json:"pid,omitempty"`
	Error  string   `json:"error,omitempty"`
	Exited string   `json:"exited,omitempty"`
}

// RemoteLauncher asks a launcher outside the jail, over Conn (a
// SOCK_SEQPACKET socket; see ServeLaunches), to start QEMU. One launch at
// a time.
type RemoteLauncher struct {
	Conn *net.UnixConn
	mu   sync.Mutex
}

// Launch sends argv and files to the launcher and waits for the pid.
func (r *RemoteLauncher) Launch(argv []string, files []*os.File, _ io.Writer) (func() error, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(launchMsg{Argv: argv})
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if _, _, err := r.Conn.WriteMsgUnix(b, unix.UnixRights(fds...), nil); err != nil {
		return nil, fmt.Errorf("ask the launcher to start QEMU: %w", err)
	}
	m, err := readMsg(r.Conn)
	if err != nil {
		return nil, fmt.Errorf("the launcher: %w", err)
	}
	if m.Error != "" {
		return nil, errors.New(m.Error)
	}
	done := make(chan error, 1)
	go func() {
		m, err := readMsg(r.Conn)
		switch {
		case err != nil:
			done <- fmt.Errorf("the launcher went away: %w", err)
		case m.Exited != "exit status 0":
			done <- errors.New(m.Exited)
		default:
			done <- nil
		}
	}()
	return func() error { return <-done }, nil
}

func readMsg(c *net.UnixConn) (launchMsg, error) {
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4*64))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return launchMsg{}, err
	}
	if n == 0 {
		return launchMsg{}, io.EOF
	}
	var m launchMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return launchMsg{}, err
	}
	if oobn > 0 {
		return m, errors.New("unexpected descriptors")
	}
	return m, nil
}

// ServeLaunches is the launcher: it serves RemoteLauncher requests on c
// until the other end closes it (the jailed simulator exited, or was
// killed), then kills what it started and returns. QEMU's output goes to
// log; each QEMU dies with the launcher (PDEATHSIG).
func ServeLaunches(c *net.UnixConn, log io.Writer) error {
	var mu sync.Mutex
	var running []*os.Process
	defer func() {
		mu.Lock()
		for _, p := range running {
			p.Kill()
		}
		mu.Unlock()
	}()
	for {
		buf := make([]byte, 1<<16)
		oob := make([]byte, unix.CmsgSpace(4*253))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return err
		}
		if n == 0 && oobn == 0 {
			return nil // the simulator is gone
		}
		var files []*os.File
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, m := range msgs {
					fds, err := unix.ParseUnixRights(&m)
					if err == nil {
						for _, fd := range fds {
							files = append(files, os.NewFile(uintptr(fd), "passed"))
						}
					}
				}
			}
		}
		var req launchMsg
		var reply launchMsg
		if err := json.Unmarshal(buf[:n], &req); err != nil || len(req.Argv) == 0 {
			reply.Error = fmt.Sprintf("launcher: bad request %q", buf[:n])
		} else {
			p, wait, err := startQEMU(req.Argv, files, log)
			if err != nil {
				reply.Error = err.Error()
			} else {
				mu.Lock()
				running = append(running, p)
				mu.Unlock()
				reply.PID = p.Pid
				go func() {
					m := launchMsg{Exited: "exit status 0"}
					if err := wait(); err != nil {
						m.Exited = err.Error()
					}
					b, _ := json.Marshal(m)
					c.Write(b)
				}()
			}
		}
		for _, f := range files {
			f.Close()
		}
		b, _ := json.Marshal(reply)
		if _, err := c.Write(b); err != nil {
			return err
		}
	}
}
