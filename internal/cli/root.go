// Package cli implements the banger command line, one file per command.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// ExitError carries a process exit status (for example the remote command's
// status after `banger vm ssh`). Main exits with Code and prints nothing.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// NewRoot returns the banger command tree, finished by finishTree and
// with every completion registered (completeTree).
func NewRoot() *cobra.Command {
	root := newRoot()
	completeTree(root)
	return root
}

// newRoot returns the command tree without the completion functions that
// only a completion request (`banger __complete ...`) needs.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs on your own machine",
		Long:          "banger creates, runs and throws away Linux microVMs (QEMU microvm or Firecracker) managed by a per-user daemon, bangerd.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newDaemonCmd(), newVMCmd(), newImageCmd(), newSSHConfigCmd())
	for _, c := range Companions {
		root.AddCommand(newCompanionCmd(c))
	}
	finishTree(root)
	return root
}

// Main runs the CLI and returns the process exit status.
func Main(ctx context.Context, args []string) int {
	root := newRoot()
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		completeTree(root)
	}
	return Execute(ctx, root, args)
}

// Execute runs root with args and returns the process exit status: 0, an
// ExitError's code, or 1 after printing the error as "banger: ...".
func Execute(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(os.Stderr, "banger: "+err.Error())
	return 1
}

// PrintJSON writes v as indented JSON, as every --json flag does.
func PrintJSON(w io.Writer, v any) error { return printJSON(w, v) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
