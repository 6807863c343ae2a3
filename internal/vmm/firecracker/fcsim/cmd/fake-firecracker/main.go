// Command fake-firecracker is a test stand-in for the firecracker binary:
// it serves fcsim, a Firecracker API simulator that follows the v1.16.1
// specification's rules, on --api-sock. It is NOT Firecracker and runs no
// guest. The simulated guest serves vsock ports fcsim.EchoPort (echo) and
// fcsim.GreetPort (greeting, then echo).
//
// It accepts the two arguments banger's driver passes, --api-sock PATH and
// --id ID, and exits 0 when the simulated guest resets after
// SendCtrlAltDel; SIGTERM and SIGKILL end it as they end Firecracker.
//
// It validates requests against the API specification named at build time
// (go build -ldflags "-X main.specFile=/path/firecracker-api-v1.16.1.yaml")
// or by $FCSIM_SPEC, which wins.
//
// For tests of a driver's escalation: FCSIM_GUEST_IGNORES_CTRL_ALT_DEL=1
// makes the simulated guest ignore SendCtrlAltDel, and FCSIM_IGNORE_SIGTERM=1
// makes the process ignore SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// specFile is set with -ldflags -X.
var specFile string

// Exit codes of Firecracker.
const (
	exitGeneric = 1
	exitBadArgs = 153
)

func main() {
	fs := flag.NewFlagSet("fake-firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "path of the API socket")
	id := fs.String("id", "anonymous-instance", "instance id")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitBadArgs)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`).MatchString(*id) {
		fmt.Fprintf(os.Stderr, "fake-firecracker: Invalid instance ID: %q\n", *id)
		os.Exit(exitBadArgs)
	}
	if p := os.Getenv("FCSIM_SPEC"); p != "" {
		specFile = p
	}
	if specFile == "" {
		fmt.Fprintln(os.Stderr, "fake-firecracker: no API specification: build with -ldflags \"-X main.specFile=PATH\" or set FCSIM_SPEC")
		os.Exit(exitGeneric)
	}
	spec, err := fcspec.Load(specFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake-firecracker: %v\n", err)
		os.Exit(exitGeneric)
	}
	if os.Getenv("FCSIM_IGNORE_SIGTERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	srv, err := fcsim.New(fcsim.Options{APISock: *apiSock, ID: *id, Spec: spec, Stdout: os.Stdout,
		IgnoreCtrlAltDel: os.Getenv("FCSIM_GUEST_IGNORES_CTRL_ALT_DEL") == "1"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake-firecracker: %v\n", err)
		os.Exit(exitGeneric)
	}
	srv.HandleGuestPort(fcsim.EchoPort, fcsim.Echo)
	srv.HandleGuestPort(fcsim.GreetPort, fcsim.Greet)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Exited():
		srv.Close()
		os.Exit(0)
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "fake-firecracker: %v\n", err)
		os.Exit(exitGeneric)
	}
}
