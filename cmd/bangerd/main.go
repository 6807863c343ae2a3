// Command bangerd is banger's per-user daemon. See internal/daemon.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/bangerhq/banger/internal/cli/hostcmd"
	"github.com/bangerhq/banger/internal/daemon"
	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/version"
)

func main() {
	// A sandbox stage (image builds) runs here and exits; see package sandbox.
	sandbox.Main()
	// So does the stage that starts a shared folder's virtiofsd.
	mounts.Main()
	// The commands banger hands over (doctor, runtime, tui) run here and
	// exit; see package hostcmd.
	if hostcmd.Handles(os.Args[1:]) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := hostcmd.Main(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("bangerd", version.String())
		return
	}
	level := slog.LevelInfo
	if os.Getenv("BANGER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The daemon's live heap is small (megabytes) but a vm.list of 1,000
	// VMs allocates several times that: with the default GOGC=100 the
	// collector ran through every such call (a fifth of its CPU). A
	// larger growth factor costs tens of megabytes at most. GOGC, when
	// set, still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	// BANGER_CPUPROFILE=FILE records a CPU profile (go tool pprof) from
	// start to exit, for the benchmarks in bench/.
	if p := os.Getenv("BANGER_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := daemon.Run(ctx, log); err != nil {
		log.Error("bangerd failed", "err", err)
		fmt.Fprintln(os.Stderr, "bangerd: "+err.Error())
		os.Exit(1)
	}
}
