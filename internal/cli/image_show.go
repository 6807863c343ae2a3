package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newImageShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one image in detail: source, digest, sizes, kernel modules, build, users",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			var im api.Image
			if err := c.Call(cmd.Context(), api.MethodImageGet, api.VMRef{Name: args[0]}, &im); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), im)
			}
			return printImageDetail(cmd.OutOrStdout(), im)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printImageDetail prints im as an aligned key/value list, like vm show.
func printImageDetail(out io.Writer, im api.Image) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s\t%s\n", k, v)
		}
	}
	row("name", im.Name)
	row("id", im.ID)
	row("source", im.Source)
	row("digest", im.Digest)
	row("size", units.IEC(im.SizeBytes))
	row("allocated", units.IEC(im.AllocatedBytes)+" (the disk space the sparse file takes)")
	row("kernel modules", firstNonEmpty(im.KernelRelease, "unknown"))
	row("created", im.CreatedAt.Local().Format(time.RFC3339))
	row("build time", buildTime(im))
	row("cache key", im.CacheKey)
	row("path", im.Path)
	if len(im.UsedBy) == 0 {
		row("used by", "no VM")
	} else {
		row("used by", strings.Join(im.UsedBy, ", "))
	}
	if len(im.Templates) == 0 {
		row("templates", "none (make one with `banger image warm "+im.Name+"`)")
	}
	for _, t := range im.Templates {
		row("template", fmt.Sprintf("%s: %s, %d CPUs, %d MiB, %s disk, %s; %s on disk, made in %.1f s",
			t.Key[:12], t.VMM, t.CPUs, t.MemoryMiB, units.IEC(t.DiskBytes), t.Accel, units.IEC(t.SizeBytes), t.BuildSeconds))
	}
	return w.Flush()
}

// buildTime says how long the build took and whether it came from the
// build cache; "" when unknown (an image built before banger recorded it).
func buildTime(im api.Image) string {
	if im.BuildSeconds <= 0 {
		if im.Cached {
			return "cached"
		}
		return ""
	}
	var s string
	switch d := time.Duration(im.BuildSeconds * float64(time.Second)); {
	case d < time.Second:
		s = fmt.Sprintf("%.2fs", im.BuildSeconds)
	case d < time.Minute:
		s = fmt.Sprintf("%.1fs", im.BuildSeconds)
	default:
		s = d.Round(time.Second).String()
	}
	if im.Cached {
		s += " (cached)"
	}
	return s
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
