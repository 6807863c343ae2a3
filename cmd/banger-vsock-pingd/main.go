// Command banger-vsock-pingd is banger's guest agent. It serves the host's
// sessions (see internal/agent for the protocol) on AF_VSOCK port agent.Port
// (Firecracker guests) and on the virtio-serial port
// /dev/virtio-ports/org.banger.agent (QEMU guests), whichever the guest has:
// pings, commands (exec), file copies (cp) and the guest clock. It runs as
// root: exec gives the host a root shell in the guest, as `banger vm ssh`
// does. It logs to stderr and exits 0 on SIGTERM or SIGINT.
//
// Installed as /usr/local/bin/banger-vsock-pingd and run by
// banger-vsock-pingd.service. Build it static: CGO_ENABLED=0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/guestclock"
	"github.com/bangerhq/banger/internal/guestcp"
	"github.com/bangerhq/banger/internal/guestexec"
	"github.com/bangerhq/banger/internal/guestid"
	"github.com/bangerhq/banger/internal/guestmount"
	"github.com/bangerhq/banger/internal/portfwd"
	"github.com/bangerhq/banger/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("banger-vsock-pingd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	showVersion := fl.Bool("version", false, "print the version and exit")
	serial := fl.String("serial-device", agent.SerialDevicePath, "virtio-serial port to serve; empty: none")
	vsockPort := fl.Uint("vsock-port", uint(agent.Port), "AF_VSOCK port to listen on; 0: none")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "banger-vsock-pingd: unexpected arguments %q\n", fl.Args())
		return 2
	}
	if *vsockPort > 1<<32-1 {
		fmt.Fprintf(stderr, "banger-vsock-pingd: --vsock-port %d out of range\n", *vsockPort)
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "banger-vsock-pingd", version.String())
		return 0
	}

	// journald stamps each line itself.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})).With("component", "agent")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// Fewer timer wake-ups of the guest's only vCPUs under TCG (see
	// agent.TimerSlack); commands the agent starts keep the usual slack.
	if err := agent.SetTimerSlack(agent.TimerSlack); err != nil {
		log.Warn("cannot set the timer slack; serving with the default", "err", err)
	}
	srv := newServer(log)
	log.Info("starting", "version", version.String(), "vsock_port", *vsockPort, "serial_device", *serial)
	var wg sync.WaitGroup
	if *vsockPort != 0 {
		wg.Go(func() { serveVsock(ctx, uint32(*vsockPort), srv, log) })
	}
	if *serial != "" {
		wg.Go(func() { _ = srv.ServeSerialPort(ctx, *serial) })
	}
	wg.Wait()
	log.Info("stopped")
	return 0
}

// serveVsock keeps a vsock listener up until ctx is done. A kernel without
// AF_VSOCK is logged once and then checked again quietly now and then (the
// module may be loaded later).
func serveVsock(ctx context.Context, port uint32, srv *agent.Server, log *slog.Logger) {
	delay := time.Second
	var lastErr string
	for ctx.Err() == nil {
		ln, err := agent.ListenVsock(port)
		if err != nil {
			if err.Error() != lastErr {
				if errors.Is(err, agent.ErrVsockUnavailable) {
					log.Info("no vsock in this kernel; serving the serial port only", "err", err)
				} else {
					log.Warn("cannot listen on vsock; retrying", "err", err)
				}
				lastErr = err.Error()
			}
			sleep(ctx, delay)
			delay = min(2*delay, time.Minute)
			continue
		}
		delay, lastErr = time.Second, ""
		log.Info("listening", "addr", ln.Addr().String())
		err = srv.ServeListener(ctx, ln)
		if ctx.Err() == nil {
			log.Warn("vsock listener failed; listening again", "err", err)
			sleep(ctx, delay)
		}
	}
}

// newServer is the agent with every operation it serves.
func newServer(log *slog.Logger) *agent.Server {
	srv := agent.NewServer(agent.ProcInfo(version.String()), log)
	srv.Handle(guestexec.Op, guestexec.Handler)
	srv.Handle(guestcp.OpIn, guestcp.HandleIn)
	srv.Handle(guestcp.OpOut, guestcp.HandleOut)
	srv.Handle(guestclock.Op, guestclock.Handler)
	srv.Handle(portfwd.Op, portfwd.Handler)
	srv.Handle(guestid.OpQuiesce, guestid.HandleQuiesce)
	srv.Handle(guestid.OpIdentity, guestid.HandleIdentity)
	srv.Handle(guestmount.Op, guestmount.Handler)
	return srv
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
