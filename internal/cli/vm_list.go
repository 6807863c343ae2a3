package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newVMListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				// Print the daemon's bytes re-indented: decoding and
				// re-encoding 1,000 VMs costs more than the RPC itself.
				raw, err := c.ListVMsJSON(cmd.Context())
				if err != nil {
					return err
				}
				return printRawList(cmd.OutOrStdout(), raw, "vms")
			}
			vms, err := c.ListVMs(cmd.Context())
			if err != nil {
				return err
			}
			return printVMTable(cmd.OutOrStdout(), vms)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printRawList prints the array under key in a JSON object, indented; a
// missing or null array prints as [].
func printRawList(out io.Writer, raw json.RawMessage, key string) error {
	// The daemon's encoder writes {"KEY":[...]} and nothing else: the
	// array is indented straight out of it, without decoding it first (the
	// answer for 1,000 VMs is half a megabyte). Anything else is decoded.
	var buf bytes.Buffer
	prefix := `{"` + key + `":`
	if bytes.HasPrefix(raw, []byte(prefix)) && bytes.HasSuffix(raw, []byte("}")) {
		if list := raw[len(prefix) : len(raw)-1]; string(list) != "null" && json.Indent(&buf, list, "", "  ") == nil {
			buf.WriteByte('\n')
			_, err := out.Write(buf.Bytes())
			return err
		}
		buf.Reset()
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("decode daemon answer: %w", err)
	}
	list := obj[key]
	if len(list) == 0 || string(list) == "null" {
		list = json.RawMessage("[]")
	}
	if err := json.Indent(&buf, list, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := out.Write(buf.Bytes())
	return err
}

func printVMTable(out io.Writer, vms []api.VM) error {
	if len(vms) == 0 {
		fmt.Fprintln(out, "no VMs yet: create one with `banger vm create NAME`")
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tIP\tCPUS\tMEMORY\tDISK\tIMAGE\tVMM\tUPTIME")
	for _, v := range vms {
		up := "-"
		if v.StartedAt != nil {
			up = units.Duration(time.Since(*v.StartedAt))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n",
			v.Name, v.State, v.IP, v.CPUs, units.IEC(int64(v.MemoryMiB)<<20), units.IEC(v.DiskBytes), v.Image, v.VMM, up)
	}
	return w.Flush()
}
