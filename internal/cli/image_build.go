package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newImageBuildCmd() *cobra.Command {
	var (
		from    string
		noCache bool
		asJSON  bool
		pf      *progressFlags
	)
	cmd := &cobra.Command{
		Use:   "build NAME --from SOURCE",
		Short: "Build an image from a Debian release or an OCI/Docker image",
		Long: `Build a bootable image. SOURCE is one of:

  debian:RELEASE               a Debian release, bootstrapped with mmdebstrap: debian:bookworm
                               (Debian 12) or debian:trixie (Debian 13)
  oci:REF                      an image in a registry (oci:docker.io/library/debian:bookworm),
                               pulled with your Docker credentials (~/.docker/config.json)
  oci-layout:DIR[:TAG|@DIGEST] an OCI image layout on disk
  docker-archive:FILE          the output of ` + "`docker save`" + `

Every image gets what a banger VM needs (systemd or OpenRC, sshd, networking,
the guest agent, the runtime kernel's modules) from scripts/customize.sh.
An unchanged rebuild (same source digest, script, kernel, agent and options)
reuses the cached result; --no-cache builds anyway.`,
		Args: cobra.ExactArgs(1),
		// NAME is a new name: nothing to complete.
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return fmt.Errorf("--from is required, for example --from debian:bookworm or --from oci:docker.io/library/debian:bookworm")
			}
			src, err := absSource(from)
			if err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			mode := pf.Mode()
			report, done := newProgressPrinter(cmd.ErrOrStderr(), mode)
			if mode != progressQuiet {
				fmt.Fprintf(cmd.ErrOrStderr(), "building image %s from %s\n", args[0], src)
			}
			start := time.Now()
			im, err := c.BuildImage(cmd.Context(), api.ImageBuildParams{Name: args[0], From: src, NoCache: noCache}, report)
			done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), im)
			}
			how := "built"
			if im.Cached {
				how = "built (from the build cache)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s image %s (%s) in %s\n", how, im.Name, units.IEC(im.SizeBytes), time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source: debian:RELEASE, oci:REF, oci-layout:DIR or docker-archive:FILE")
	cmd.Flags().BoolVar(&noCache, "no-cache", false, "build even if the build cache holds a result for the same inputs")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image as JSON")
	pf = addProgressFlags(cmd)
	return cmd
}

// absSource makes the path of an oci-layout: or docker-archive: source
// absolute: the daemon does not share the CLI's working directory.
func absSource(from string) (string, error) {
	for _, kind := range []string{"oci-layout:", "docker-archive:"} {
		rest, ok := strings.CutPrefix(from, kind)
		if !ok || rest == "" || filepath.IsAbs(rest) {
			continue
		}
		abs, err := filepath.Abs(rest)
		if err != nil {
			return "", fmt.Errorf("--from %s: %w", from, err)
		}
		return kind + abs, nil
	}
	return from, nil
}
