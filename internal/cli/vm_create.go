package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
)

func newVMCreateCmd() *cobra.Command {
	var p api.VMCreateParams
	var disk, name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a VM and wait until it answers SSH",
		Long: "Create a VM from an image and boot it; returns once the guest answers SSH.\n" +
			"Without a name, banger picks a memorable one.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if name != "" && name != args[0] {
					return errors.New("give the name once: either as an argument or with --name")
				}
				name = args[0]
			}
			p.Name = name
			if disk != "" {
				n, err := ParseSize(disk)
				if err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
				p.DiskBytes = n
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.CreateVM(cmd.Context(), p)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			if p.NoStart {
				fmt.Fprintf(cmd.OutOrStdout(), "created %s (%s), not started\n", vm.Name, vm.IP)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is running at %s; connect with: banger vm ssh %s\n", vm.Name, vm.IP, vm.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "VM name (a DNS label); default: a memorable random name")
	f.StringVar(&p.Image, "image", "", "image to boot (default: the image named \"default\")")
	f.IntVar(&p.CPUs, "cpus", 0, "virtual CPUs (default 2, at most the host's)")
	f.IntVar(&p.MemoryMiB, "memory", 0, "memory in MiB (default 1024)")
	f.StringVar(&disk, "disk", "", "disk size, e.g. 8G (default 4G, at least the image size)")
	f.BoolVar(&p.NoStart, "no-start", false, "create the VM without booting it")
	f.StringVar(&p.VMM, "vmm", "", "virtual machine monitor: qemu or firecracker (default: the best available)")
	f.BoolVar(&asJSON, "json", false, "print the VM as JSON")
	return cmd
}
