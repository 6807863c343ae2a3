package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newImageImportCmd() *cobra.Command {
	var (
		asJSON bool
		pf     *progressFlags
	)
	cmd := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Import an ext4 image file or a root file system tarball as an image",
		Long: `Import FILE as image NAME. FILE is told apart by its content, not its name:

  an ext4 file system image   checked with e2fsck -fn and copied in (sparse or
                              copy-on-write); it should hold /usr/sbin/sshd and
                              the guest agent /usr/local/bin/banger-vsock-pingd
                              (the daemon log warns when they are missing)
  a tar archive of a root     plain or compressed with gzip, xz or zstd
  file system

The image's digest is the SHA-256 of the file.`,
		Args: cobra.ExactArgs(2),
		// NAME is a new name; FILE a file.
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveDefault
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, file := args[0], args[1]
			abs, err := filepath.Abs(file)
			if err != nil {
				return err
			}
			// The daemon opens it too; this only gives a local mistake a
			// local message.
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("import %s: %w", file, err)
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			mode := pf.Mode()
			report, done := newProgressPrinter(cmd.ErrOrStderr(), mode)
			if mode != progressQuiet {
				fmt.Fprintf(cmd.ErrOrStderr(), "importing %s as image %s\n", abs, name)
			}
			start := time.Now()
			var im api.Image
			err = c.CallProgress(cmd.Context(), api.MethodImageImport, api.ImageImportParams{Name: name, File: abs}, &im, report)
			done()
			if err != nil {
				return err
			}
			for _, w := range im.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), im)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported image %s (%s, %s) in %s\n", im.Name, units.IEC(im.SizeBytes),
				im.Digest, time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image as JSON")
	pf = addProgressFlags(cmd)
	return cmd
}
