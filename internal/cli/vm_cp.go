package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/guestcp"
)

// cpProgressMin is the size from which vm cp shows progress on a terminal.
const cpProgressMin = 8 << 20

func newVMCpCmd() *cobra.Command {
	var recursive, quiet bool
	cmd := &cobra.Command{
		Use:   "cp [-r] SRC DST",
		Short: "Copy files and trees between the host and a VM (NAME:PATH on one side)",
		Long: "Copies through the guest agent (no network, no sshd). One of SRC and DST is\n" +
			"NAME:PATH, a path in VM NAME (absolute, or relative to /root); the other a\n" +
			"local path. As cp -r does, the copy goes into DST when DST is a directory,\n" +
			"else to DST. Modes and modification times are kept, symlinks are copied as\n" +
			"links; device nodes, sockets and pipes are skipped. Files written on the host\n" +
			"belong to you and never keep setuid, setgid or sticky bits; in the guest they\n" +
			"belong to root. Nothing from the guest is written outside DST.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := parseCopyArg(args[0]), parseCopyArg(args[1])
			switch {
			case src.vm != "" && dst.vm != "":
				return errors.New("both sides name a VM: copy to the host first, then to the other VM")
			case src.vm == "" && dst.vm == "":
				return errors.New("neither side names a VM: write one side as NAME:PATH (a local path with a colon: ./a:b)")
			case src.vm != "":
				return copyOut(cmd, src, dst.path, recursive, quiet)
			default:
				return copyIn(cmd, src.path, dst, recursive, quiet)
			}
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy directories and what they hold")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "show no progress")
	return cmd
}

// copyArg is one side of vm cp: a VM path or a local one.
type copyArg struct {
	vm, path string
}

// parseCopyArg reads NAME:PATH (a colon before any slash) or a local path.
func parseCopyArg(s string) copyArg {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.Contains(s[:i], "/") {
		return copyArg{path: s}
	}
	p := s[i+1:]
	if p == "" {
		p = "/root"
	} else if !strings.HasPrefix(p, "/") {
		p = path.Join("/root", p)
	}
	return copyArg{vm: s[:i], path: p}
}

// cpProgress returns a progress callback and its end for a copy of total
// bytes: a live line on a terminal for large copies, else nothing.
func cpProgress(cmd *cobra.Command, quiet bool, what string, total int64) (func(int64), func()) {
	if quiet || total < cpProgressMin || !isTerminal(cmd.ErrOrStderr()) {
		return nil, func() {}
	}
	report, done := newProgressPrinter(cmd.ErrOrStderr(), progressLive)
	return func(n int64) { report(api.Progress{Phase: "copy", Message: what, Done: n, Total: total}) }, done
}

func copyIn(cmd *cobra.Command, src string, dst copyArg, recursive, quiet bool) error {
	ctx := cmd.Context()
	dir, total, err := guestcp.Inspect(src, recursive)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: no such file or directory", src)
	}
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	c, err := connect(ctx)
	if err != nil {
		return err
	}
	sc, err := c.CopyInVM(ctx, api.VMCopyInParams{Name: dst.vm, Dest: dst.path, Source: filepath.Base(abs), Dir: dir})
	if err != nil {
		return err
	}
	defer sc.Close()
	progress, done := cpProgress(cmd, quiet, src+" → "+dst.vm+":"+dst.path, total)
	_, err = guestcp.Push(sc, abs, recursive, progress)
	done()
	if err != nil {
		return fmt.Errorf("copy %s to %s:%s: %w", src, dst.vm, dst.path, err)
	}
	return nil
}

func copyOut(cmd *cobra.Command, src copyArg, dst string, recursive, quiet bool) error {
	ctx := cmd.Context()
	c, err := connect(ctx)
	if err != nil {
		return err
	}
	sc, res, err := c.CopyOutVM(ctx, api.VMCopyOutParams{Name: src.vm, Path: src.path, Recursive: recursive})
	if err != nil {
		return err
	}
	defer sc.Close()
	progress, done := cpProgress(cmd, quiet, src.vm+":"+src.path+" → "+dst, res.Bytes)
	_, err = guestcp.Pull(sc, guestcp.OutResult{Dir: res.Dir, Bytes: res.Bytes}, dst, path.Base(src.path), progress)
	done()
	if err != nil {
		return fmt.Errorf("copy %s:%s to %s: %w", src.vm, src.path, dst, err)
	}
	return nil
}
