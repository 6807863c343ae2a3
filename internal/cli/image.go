package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Build and list VM images"}
	var from string
	build := &cobra.Command{
		Use:   "build NAME --from SOURCE",
		Short: "Build an image (SOURCE: debian:RELEASE, e.g. debian:bookworm)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return fmt.Errorf("--from is required, for example --from debian:bookworm")
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			start := time.Now()
			fmt.Fprintf(cmd.ErrOrStderr(), "building image %s from %s (the daemon log has the details)...\n", args[0], from)
			im, err := c.BuildImage(cmd.Context(), api.ImageBuildParams{Name: args[0], From: from}, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "built image %s (%s) in %s\n", im.Name, humanBytes(im.SizeBytes), time.Since(start).Round(time.Second))
			return nil
		},
	}
	build.Flags().StringVar(&from, "from", "", "source: debian:RELEASE")
	var asJSON bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ims, err := c.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if ims == nil {
					ims = []api.Image{}
				}
				return printJSON(cmd.OutOrStdout(), ims)
			}
			if len(ims) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no images yet: build one with `banger image build default --from debian:bookworm`")
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSOURCE\tSIZE\tKERNEL\tCREATED\tUSED BY")
			for _, im := range ims {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", im.Name, im.Source, humanBytes(im.SizeBytes),
					im.KernelRelease, im.CreatedAt.Local().Format("2006-01-02 15:04"), len(im.UsedBy))
			}
			return w.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete images no VM uses",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return each(cmd, args, func(c *client.Client, name string) error {
				if err := c.Call(cmd.Context(), api.MethodImageDelete, api.VMStopParams{Name: name}, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted image %s\n", name)
				return nil
			})
		},
	}
	cmd.AddCommand(build, ls, rm)
	return cmd
}
