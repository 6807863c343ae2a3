package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/units"
)

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, run, reach and remove VMs"}
	cmd.AddCommand(newVMCreateCmd(), newVMListCmd(), newVMShowCmd(),
		newVMStartCmd(), newVMStopCmd(), newVMRestartCmd(), newVMRemoveCmd(),
		newVMSSHCmd(), newVMLogsCmd(), newVMPingCmd())
	return cmd
}

// ParseSize parses a disk size such as "4G" (see units.ParseSize).
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%dM", n>>20)
	default:
		return fmt.Sprintf("%dB", n)
	}
}
