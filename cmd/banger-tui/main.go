// Command banger-tui runs `banger tui`, which banger hands over to it: the
// TUI's packages stay out of the banger binary. See internal/cli/tuicmd.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bangerhq/banger/internal/cli/tuicmd"
)

func main() {
	args := os.Args[1:]
	if !tuicmd.Handles(args) {
		fmt.Fprintln(os.Stderr, "banger-tui runs `banger tui`: use banger tui")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := tuicmd.Main(ctx, args)
	stop()
	os.Exit(code)
}
