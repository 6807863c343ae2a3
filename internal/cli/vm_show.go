package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/units"
)

func newVMShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one VM in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			row := func(k, v string) {
				if v != "" {
					fmt.Fprintf(w, "%s\t%s\n", k, v)
				}
			}
			row("name", v.Name)
			row("id", v.ID)
			row("state", v.State)
			if v.StartedAt != nil {
				row("uptime", units.Duration(time.Since(*v.StartedAt)))
			}
			if v.ClockOffsetMillis != nil && v.ClockMeasuredAt != nil {
				row("clock", fmt.Sprintf("%+.3f s from the host's (measured %s ago)", *v.ClockOffsetMillis/1000, units.Duration(time.Since(*v.ClockMeasuredAt))))
			}
			row("ip", v.IP)
			row("mac", v.MAC)
			row("cpus", fmt.Sprint(v.CPUs))
			row("memory", fmt.Sprintf("%d MiB", v.MemoryMiB))
			row("disk", units.IEC(v.DiskBytes))
			row("image", v.Image)
			row("vmm", v.VMM)
			row("accel", v.Accel)
			if v.PID > 0 {
				row("pid", fmt.Sprint(v.PID))
			}
			row("vmm user", v.VMMUser)
			row("tap", v.TAP)
			if v.VsockCID > 0 {
				row("vsock cid", fmt.Sprint(v.VsockCID))
			}
			row("agent socket", v.AgentSocket)
			row("kernel", v.Kernel)
			row("kernel args", v.KernelArgs)
			row("folder", v.Dir)
			row("console log", v.ConsoleLog)
			row("created", v.CreatedAt.Local().Format(time.RFC3339))
			for _, m := range v.Mounts {
				row("mount", m.Spec)
			}
			for _, f := range v.Forwards {
				row("forward", forwardLine(f))
			}
			for _, n := range v.Notes {
				row("note", n)
			}
			row("last error", strings.SplitN(v.LastError, "\n", 2)[0])
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
