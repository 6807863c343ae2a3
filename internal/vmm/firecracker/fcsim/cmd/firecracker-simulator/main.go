// Command firecracker-simulator is a Firecracker simulator for tests: it
// serves fcsim, which follows Firecracker v1.16.1's API specification and
// rules, on --api-sock, and boots the configured guest for real under QEMU's
// microvm machine with TCG (fcsim.QEMUGuest). It is NOT Firecracker, says so
// in its first log line, and exists because Firecracker cannot run on
// banger's build machines: the daemon's Firecracker driver is proven against
// it (see the README's Firecracker section).
//
// It parses its arguments as Firecracker does (package fcargs; exit 153 on
// bad arguments): --api-sock PATH and --id ID, and accepts the ones the
// jailer adds (--start-time-us and the like). It exits 0 when its
// guest ends (it powered off after SendCtrlAltDel, or QEMU exited); SIGTERM
// and SIGKILL end it, and its QEMU with it, as they end Firecracker.
//
// Like Firecracker it gets an empty environment from the driver; QEMU is
// qemu-system-x86_64 in $PATH or else in /usr/local/bin, /usr/bin or /bin.
// Test settings (the driver's unit tests pass their environment on):
// FCSIM_GUEST=fake boots fcsim.FakeGuest instead of QEMU, with vsock echo
// and greeting services on ports fcsim.EchoPort and fcsim.GreetPort;
// FCSIM_GUEST_IGNORES_CTRL_ALT_DEL=1 makes that guest ignore
// SendCtrlAltDel; FCSIM_IGNORE_SIGTERM=1 makes the process ignore SIGTERM;
// FCSIM_DEV_TUN names the TUN clone device (default /dev/net/tun).
//
// Run by the jailer simulator, it is jailed as Firecracker would be (a
// chroot, its own uid): it opens the kernel, disk and TAP by their paths
// in the jail, and starts QEMU through the launcher the jailer simulator
// left outside the jail ($FCSIM_LAUNCHER_FD, see fcsim.Launcher).
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcargs"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// Exit codes of Firecracker.
const (
	exitGeneric = 1
	exitBadArgs = 153
)

// args are the Firecracker v1.16.1 arguments the simulator accepts: those
// it acts on (--api-sock, --id) and those that change nothing it simulates
// (timing, seccomp, log format). Firecracker's other arguments
// (--config-file, --no-api, ...) are refused as unknown: they are not
// simulated.
var args = []fcargs.Arg{
	{Name: "api-sock", Value: true, Default: "/run/firecracker.socket"},
	{Name: "id", Value: true, Default: "anonymous-instance"},
	{Name: "seccomp-filter", Value: true, Forbids: []string{"no-seccomp"}},
	{Name: "no-seccomp", Forbids: []string{"seccomp-filter"}},
	// Passed by the jailer.
	{Name: "start-time-us", Value: true},
	{Name: "start-time-cpu-us", Value: true},
	{Name: "parent-cpu-time-us", Value: true},
	{Name: "level", Value: true},
	{Name: "show-level"},
	{Name: "show-log-origin"},
	{Name: "boot-timer"},
}

func main() {
	a, err := fcargs.Parse(args, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: %v\n\nFor more information try --help.\n", err)
		os.Exit(exitBadArgs)
	}
	if a.Help || a.Version {
		fmt.Println("Firecracker simulator (NOT Firecracker) for Firecracker v1.16.1")
		os.Exit(0)
	}
	apiSock, _ := a.Value("api-sock")
	id, _ := a.Value("id")
	if err := fcargs.ValidID(id); err != nil {
		fmt.Fprintf(os.Stderr, "firecracker-simulator: Invalid instance ID: %v\n", err)
		os.Exit(exitBadArgs)
	}
	spec, err := fcspec.Embedded()
	if err != nil {
		fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
		os.Exit(exitGeneric)
	}
	if os.Getenv("FCSIM_IGNORE_SIGTERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	var guest fcsim.Guest
	if os.Getenv("FCSIM_GUEST") == "fake" {
		g := &fcsim.FakeGuest{IgnoreCtrlAltDel: os.Getenv("FCSIM_GUEST_IGNORES_CTRL_ALT_DEL") == "1"}
		g.Handle(fcsim.EchoPort, fcsim.Echo)
		g.Handle(fcsim.GreetPort, fcsim.Greet)
		guest = g
	} else if fd := os.Getenv(fcsim.LauncherFDEnv); fd != "" {
		// Jailed: QEMU is outside, started by the jailer simulator's
		// launcher.
		launcher, err := remoteLauncher(fd)
		if err != nil {
			fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
			os.Exit(exitGeneric)
		}
		guest = &fcsim.QEMUGuest{Binary: "qemu-system-x86_64", Launcher: launcher, Log: os.Stderr}
	} else {
		bin, err := fcsim.FindQEMU()
		if err != nil {
			fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
			os.Exit(exitGeneric)
		}
		guest = &fcsim.QEMUGuest{Binary: bin, Log: os.Stderr}
	}
	srv, err := fcsim.New(fcsim.Options{APISock: apiSock, ID: id, Spec: spec, Stdout: os.Stdout, Guest: guest,
		DevTUN: os.Getenv("FCSIM_DEV_TUN")})
	if err != nil {
		fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
		os.Exit(exitGeneric)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Exited():
		srv.Close()
		os.Exit(0)
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
		os.Exit(exitGeneric)
	}
}

// remoteLauncher is the launcher on the inherited descriptor fd.
func remoteLauncher(fd string) (*fcsim.RemoteLauncher, error) {
	n, err := strconv.Atoi(fd)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: not a descriptor", fcsim.LauncherFDEnv, fd)
	}
	f := os.NewFile(uintptr(n), "launcher")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("the launcher's descriptor %d: %w", n, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("the launcher's descriptor %d is not a unix socket", n)
	}
	return &fcsim.RemoteLauncher{Conn: uc}, nil
}
