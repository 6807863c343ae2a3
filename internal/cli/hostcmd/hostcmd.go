// Package hostcmd holds the banger commands that the bangerd binary runs
// (see cli.Companions): `doctor` (the host checks and the KVM probe) and
// `runtime` (the runtime bundle's tools and downloads). They link packages
// the banger binary then does without, so that every other command starts
// without their initialisation. bangerd runs them as `bangerd NAME ARGS...`
// and exits; no daemon starts.
package hostcmd

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/cli"
)

// NewRoot returns the tree of these commands, read as banger's.
func NewRoot() *cobra.Command {
	return cli.CompanionRoot(newDoctorCmd(), newRuntimeCmd())
}

// Handles reports whether args (bangerd's arguments) ask for one of these
// commands, or to complete one.
func Handles(args []string) bool { return cli.CompanionArgs("bangerd", args) }

// Main runs the command args name and returns the process exit status.
func Main(ctx context.Context, args []string) int {
	return cli.Execute(ctx, NewRoot(), args)
}
