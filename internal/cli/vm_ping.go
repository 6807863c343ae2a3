package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newVMPingCmd() *cobra.Command {
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ping NAME",
		Short: "Ask a VM's guest agent whether it is alive (not over the network)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: give a positive duration, such as 2s", timeout)
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			r, err := c.PingVM(cmd.Context(), args[0], timeout)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), r); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), describePing(r))
			}
			if !r.Alive {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the guest agent")
	return cmd
}

// describePing is the one-line human form of a ping result.
func describePing(r api.PingResult) string {
	switch {
	case r.Alive:
		s := fmt.Sprintf("%s is alive: %s, up %s, rtt %.1f ms (via %s)", r.Name, r.Hostname,
			units.Duration(time.Duration(r.UptimeSeconds*float64(time.Second))), r.RTTMillis, r.Channel)
		if r.ClockOffsetMillis != nil {
			s += fmt.Sprintf(", clock %+.3f s", *r.ClockOffsetMillis/1000)
		}
		if r.Note != "" {
			s += "\nnote: " + r.Note
		}
		return s
	case r.State != api.StateRunning:
		return fmt.Sprintf("%s is %s", r.Name, r.State)
	default:
		return fmt.Sprintf("%s is running but its guest agent does not answer: %s", r.Name, r.Error)
	}
}
