// Command firecracker-simulator is a Firecracker simulator for tests: it
// serves fcsim, which follows Firecracker v1.16.1's API specification and
// rules, on --api-sock, and boots the configured guest for real under QEMU's
// microvm machine with TCG (fcsim.QEMUGuest). It is NOT Firecracker, says so
// in its first log line, and exists because Firecracker cannot run on
// banger's build machines: the daemon's Firecracker driver is proven against
// it (see the README's Firecracker section).
//
// It accepts the arguments banger's driver passes, --api-sock PATH and --id
// ID (Firecracker's rules: exit 153 on bad arguments), and exits 0 when its
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
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// Exit codes of Firecracker.
const (
	exitGeneric = 1
	exitBadArgs = 153
)

func main() {
	fs := flag.NewFlagSet("firecracker-simulator", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "path of the API socket")
	id := fs.String("id", "anonymous-instance", "instance id")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitBadArgs)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`).MatchString(*id) {
		fmt.Fprintf(os.Stderr, "firecracker-simulator: Invalid instance ID: %q\n", *id)
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
	} else {
		bin, err := findQEMU()
		if err != nil {
			fmt.Fprintf(os.Stderr, "firecracker-simulator: %v\n", err)
			os.Exit(exitGeneric)
		}
		guest = &fcsim.QEMUGuest{Binary: bin, Log: os.Stderr}
	}
	srv, err := fcsim.New(fcsim.Options{APISock: *apiSock, ID: *id, Spec: spec, Stdout: os.Stdout, Guest: guest,
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

// findQEMU looks for qemu-system-x86_64 in $PATH, then in the usual
// folders (the driver gives its VMM an empty environment).
func findQEMU() (string, error) {
	const name = "qemu-system-x86_64"
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
