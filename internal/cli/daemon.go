package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/paths"
)

func newDaemonCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "daemon", Short: "Control bangerd, the per-user daemon"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether bangerd runs, its version and VM counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs, err := paths.Resolve()
			if err != nil {
				return err
			}
			st, err := client.New(dirs.Socket()).Status(cmd.Context())
			if errors.Is(err, client.ErrDaemonNotRunning) {
				return fmt.Errorf("bangerd is not running (socket %s): start it with `banger daemon start` (any banger vm command starts it too)", dirs.Socket())
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "version\t%s\n", st.Version)
			fmt.Fprintf(w, "pid\t%d\n", st.PID)
			fmt.Fprintf(w, "uptime\t%s\n", time.Since(st.StartedAt).Round(time.Second))
			fmt.Fprintf(w, "socket\t%s\n", st.Socket)
			fmt.Fprintf(w, "state dir\t%s\n", st.StateDir)
			fmt.Fprintf(w, "runtime dir\t%s\n", st.RuntimeDir)
			fmt.Fprintf(w, "network\t%s on %s\n", st.Subnet, st.Bridge)
			switch {
			case st.DNS != "":
				fmt.Fprintf(w, "names\tNAME.banger.internal served on %s (%s)\n", st.DNS, st.DNSResolved)
			case st.DNSError != "":
				fmt.Fprintf(w, "names\tno DNS server: %s\n", st.DNSError)
			default:
				fmt.Fprintf(w, "names\tDNS server starts with the bridge (at the first VM start)\n")
			}
			fmt.Fprintf(w, "vms\t%d (%d running)\n", st.VMs, st.Running)
			return w.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	start := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd unless it runs (any vm or image command starts it too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			return printRunning(cmd, c)
		},
	}
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd (running VMs keep running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs, err := paths.Resolve()
			if err != nil {
				return err
			}
			err = stopDaemon(cmd.Context(), client.New(dirs.Socket()), dirs)
			if errors.Is(err, client.ErrDaemonNotRunning) {
				fmt.Fprintln(cmd.OutOrStdout(), "bangerd is not running")
				return nil
			}
			return err
		},
	}
	restart := &cobra.Command{
		Use:   "restart",
		Short: "Restart bangerd (running VMs keep running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs, err := paths.Resolve()
			if err != nil {
				return err
			}
			c := client.New(dirs.Socket())
			if err := stopDaemon(cmd.Context(), c, dirs); err != nil && !errors.Is(err, client.ErrDaemonNotRunning) {
				return err
			}
			if err := startDaemon(dirs); err != nil {
				return err
			}
			if err := waitDaemon(cmd.Context(), c, dirs); err != nil {
				return err
			}
			return printRunning(cmd, c)
		},
	}
	cmd.AddCommand(status, start, stop, restart)
	return cmd
}

// printRunning prints which daemon now answers at c.
func printRunning(cmd *cobra.Command, c *client.Client) error {
	st, err := c.Status(cmd.Context())
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "bangerd %s running (pid %d)\n", st.Version, st.PID)
	return nil
}
