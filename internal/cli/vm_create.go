package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
)

func newVMCreateCmd() *cobra.Command {
	var p api.VMCreateParams
	var disk, name string
	var asJSON bool
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a VM and wait until it answers SSH",
		Long: "Create a VM from an image and boot it; returns once the guest answers SSH.\n" +
			"Without a name, banger picks a memorable one.",
		Args: cobra.MaximumNArgs(1),
		// NAME is a new name: nothing to complete.
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if args[0] == "" {
					return errors.New(`the VM name "" is empty: give a name (a DNS label such as dev), or leave it out and banger picks one`)
				}
				if name != "" && name != args[0] {
					return errors.New("give the name once: either as an argument or with --name")
				}
				name = args[0]
			}
			if err := checkGivenFlags(cmd); err != nil {
				return err
			}
			p.Name = name
			for i, m := range p.Mounts {
				abs, err := absMount(m)
				if err != nil {
					return fmt.Errorf("--mount: %w", err)
				}
				p.Mounts[i] = abs
			}
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
			vm, err := withProgress(cmd, pf, func(ctx context.Context) (api.VM, error) { return c.CreateVM(ctx, p) })
			if err != nil {
				return bootFailure(err, "", true)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			if p.NoStart {
				fmt.Fprintf(cmd.OutOrStdout(), "created %s (%s), not started\n", vm.Name, vm.IP)
				return nil
			}
			from := ""
			if vm.BootedFrom != "" {
				from = " (" + vm.BootedFrom + ")"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is running at %s%s; connect with: banger vm ssh %s\n", vm.Name, vm.IP, from, vm.Name)
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
	f.BoolVar(&p.Cold, "cold", false, "boot the kernel even when a warm template of the image exists (see image warm)")
	f.StringVar(&p.VMM, "vmm", "", "virtual machine monitor: qemu or firecracker (default: the best available)")
	f.StringArrayVar(&p.Publish, "publish", nil, "forward a host port to a port of the guest's 127.0.0.1: [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp] (repeatable; see banger vm forward)")
	f.StringArrayVar(&p.Mounts, "mount", nil, "share a host folder with the guest (QEMU only): HOST_DIR[:GUEST_DIR][:ro], the guest folder being HOST_DIR unless given (repeatable; see banger vm mount)")
	f.BoolVar(&asJSON, "json", false, "print the VM as JSON")
	pf = addProgressFlags(cmd)
	return cmd
}

// checkGivenFlags refuses vm create flags given on the command line with a
// value the request would take for "not given" (an empty string, 0) or
// that is never valid (a negative number): `--cpus 0` is a mistake, not a
// request for the default. Leaving a flag out still gives the default.
func checkGivenFlags(cmd *cobra.Command) error {
	f := cmd.Flags()
	var errs []error
	for _, name := range []string{"name", "image", "vmm", "disk"} {
		if f.Changed(name) && f.Lookup(name).Value.String() == "" {
			errs = append(errs, fmt.Errorf("--%s is empty: give a value, or leave --%s out for the default", name, name))
		}
	}
	for _, c := range []struct{ flag, what string }{{"cpus", "virtual CPUs"}, {"memory", "MiB of memory"}} {
		if !f.Changed(c.flag) {
			continue
		}
		if n, err := f.GetInt(c.flag); err == nil && n < 1 {
			errs = append(errs, fmt.Errorf("--%s %d: give a positive number of %s, or leave --%s out for the default", c.flag, n, c.what, c.flag))
		}
	}
	return errors.Join(errs...)
}
