package cli

import (
	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/units"
)

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, run, reach and remove VMs"}
	cmd.AddCommand(newVMCreateCmd(), newVMListCmd(), newVMShowCmd(),
		newVMStartCmd(), newVMStopCmd(), newVMRestartCmd(), newVMPauseCmd(), newVMResumeCmd(), newVMRemoveCmd(),
		newVMSSHCmd(), newVMExecCmd(), newVMCpCmd(), newVMLogsCmd(), newVMPingCmd(), newVMForwardCmd(), newVMMountCmd())
	return cmd
}

// ParseSize parses a disk size such as "4G" (see units.ParseSize).
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }
