package hostcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/cli"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/vmdns"
)

// newDoctorCmd returns `banger doctor`: it runs the host checks in this
// process and asks a running daemon for the one that reads banger's images
// (it never starts the daemon; without one that check is skipped and says
// so), prints the findings, and fails with exit status 1, printing nothing
// more, when any check fails.
func newDoctorCmd() *cobra.Command {
	var asJSON, noProbe bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs and build images",
		Long: "doctor checks the runtime bundle, the VMMs (QEMU, Firecracker), KVM, networking privileges, " +
			"host tools, the guest agent in each image (asked of a running bangerd) and free disk space, and prints how to fix each problem. " +
			"The daemon runs the same checks before vm create, vm start and image build.\n\n" +
			"Unless a result is cached, doctor boots a tiny probe VM (up to 15 s) to learn whether KVM can run guests; " +
			"the daemon reuses that result. Exit status 1 means at least one check failed.",
		Args: cobra.NoArgs,
		// The report is the whole output: a failed check exits 1 without
		// an error line or usage after it.
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := doctor.LoadEnv()
			if err != nil {
				return err
			}
			env.ProbeKVM = !noProbe
			env.VerifyRuntime = bundle.Verify
			env.Notify = func(msg string) { fmt.Fprintln(cmd.ErrOrStderr(), "banger doctor: "+msg) }
			env.ImageAgent = func(ctx context.Context) doctor.Result {
				return imageAgentFromDaemon(ctx, client.New(env.Dirs.Socket()), env.Dirs.DaemonLog())
			}
			env.Names = func(ctx context.Context) doctor.Result {
				return namesFromDaemon(ctx, client.New(env.Dirs.Socket()))
			}
			rep := doctor.Run(cmd.Context(), env, doctor.Filter{})
			if asJSON {
				if err := cli.PrintJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if err := printDoctorReport(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if rep.Failed() {
				return &cli.ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: every check {id, title, status, detail, fix} and a summary")
	cmd.Flags().BoolVar(&noProbe, "no-probe", false, "do not boot a probe VM to learn whether KVM runs guests (use the cached result only)")
	return cmd
}

// printDoctorReport prints a CHECK / STATUS / DETAIL table, each warning's
// or failure's fix under it, and a summary line.
func printDoctorReport(out io.Writer, rep doctor.Report) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CHECK\tSTATUS\tDETAIL")
	for _, f := range rep.Checks {
		fmt.Fprintf(w, "%s\t%s\t%s\n", f.ID, strings.ToUpper(string(f.Status)), f.Detail)
		if f.Fix == "" || (f.Status != doctor.StatusWarn && f.Status != doctor.StatusFail) {
			continue
		}
		for i, l := range strings.Split(f.Fix, "\n") {
			label := "fix: "
			if i > 0 {
				label = "     "
			}
			fmt.Fprintf(w, "\t\t%s%s\n", label, l)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	s := rep.Summary
	fmt.Fprintf(out, "\n%d checks: %d ok, %d warn, %d fail, %d skipped\n", len(rep.Checks), s.OK, s.Warn, s.Fail, s.Skip)
	if s.Fail > 0 {
		fmt.Fprintln(out, "banger cannot work fully on this host until the failures above are fixed.")
	}
	return nil
}

// imageAgentFromDaemon is the image-agent finding as the daemon at c
// reports it (daemonLog is where its log is): only bangerd reads its
// database and image files. A daemon
// that is not running, or too old to know the check, gives a skip that
// says what to do.
func imageAgentFromDaemon(ctx context.Context, c *client.Client, daemonLog string) doctor.Result {
	r, err := c.CheckImageAgent(ctx)
	var re *api.RemoteError
	switch {
	case errors.Is(err, client.ErrDaemonNotRunning):
		return doctor.Result{Status: doctor.StatusSkip,
			Detail: "bangerd is not running, and only it reads the images: start it with `banger daemon start`, then run `banger doctor` again"}
	case errors.As(err, &re) && re.Code == api.CodeMethodNotFound:
		return doctor.Result{Status: doctor.StatusSkip,
			Detail: fmt.Sprintf("the running bangerd (%s) is older than this check: restart it with `banger daemon restart`", c.LastDaemon().Version)}
	case err != nil:
		return doctor.Result{Status: doctor.StatusWarn, Detail: "ask bangerd to check the images: " + err.Error(),
			Fix: "see the daemon log " + daemonLog}
	}
	return doctor.Result{Status: doctor.Status(r.Status), Detail: r.Detail, Fix: r.Fix}
}

// namesFromDaemon is the vm-names finding: the running daemon's DNS server
// (daemon.status), and whether this host resolves doctor.NamesHost through
// it. Without a daemon the check is skipped.
func namesFromDaemon(ctx context.Context, c *client.Client) doctor.Result {
	st, err := c.Status(ctx)
	if errors.Is(err, client.ErrDaemonNotRunning) {
		return doctor.Result{Status: doctor.StatusSkip,
			Detail: "bangerd is not running, and its DNS server answers NAME.banger.internal: start it with `banger daemon start`, then run `banger doctor` again"}
	}
	if err != nil {
		return doctor.Result{Status: doctor.StatusWarn, Detail: "ask bangerd about its DNS server: " + err.Error()}
	}
	ns := doctor.NamesStatus{Bridge: st.Bridge, Server: st.DNS, Err: st.DNSError, Resolved: st.DNSResolved}
	return doctor.NamesResult(ns, doctor.ResolveHost(ctx, doctor.NamesHost), vmdns.ResolvedRunning())
}
