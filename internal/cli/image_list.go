package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newImageListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
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
			return printImageTable(cmd.OutOrStdout(), ims)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printImageTable(out io.Writer, ims []api.Image) error {
	if len(ims) == 0 {
		fmt.Fprintln(out, "no images yet: build one with `banger image build default --from debian:bookworm`")
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSOURCE\tSIZE\tALLOCATED\tKERNEL\tCREATED\tBUILD\tUSED BY")
	for _, im := range ims {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", im.Name, im.Source, units.IEC(im.SizeBytes),
			units.IEC(im.AllocatedBytes), firstNonEmpty(im.KernelRelease, "-"),
			im.CreatedAt.Local().Format("2006-01-02 15:04"), firstNonEmpty(buildTime(im), "-"), len(im.UsedBy))
	}
	return w.Flush()
}
