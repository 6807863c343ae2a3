package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/doctor"
)

// newDoctorCmd returns `banger doctor`: it runs every host check in this
// process (it neither needs nor starts the daemon), prints the findings, and
// fails with exit status 1, printing nothing more, when any check fails.
func newDoctorCmd() *cobra.Command {
	var asJSON, noProbe bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs and build images",
		Long: "doctor checks the runtime bundle, the VMMs (QEMU, Firecracker), KVM, networking privileges, " +
			"host tools, the guest agent in each image and free disk space, and prints how to fix each problem. " +
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
			rep := doctor.Run(cmd.Context(), env, doctor.Filter{})
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if err := printDoctorReport(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if rep.Failed() {
				return &ExitError{Code: 1}
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
