package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

func newImageWarmCmd() *cobra.Command {
	var p api.ImageWarmParams
	var disk string
	var asJSON bool
	var pf *progressFlags
	cmd := &cobra.Command{
		Use:   "warm NAME",
		Short: "Make a warm template of an image: vm create then starts clones of it in under a second",
		Long: `Boot a guest of the image once, wait until its boot has finished, sync
its disk and save it, stopped, as a warm template. vm create of that image with the same
--cpus, --memory, --disk and --vmm then starts a clone of the template instead
of booting (vm create --cold boots anyway); each clone gets its own identity
(address, MAC, hostname, machine-id, SSH host key, a reseeded RNG, the host's
time) before it is reported ready.

A template is made for one machine: the VMM build, accelerator, CPU model,
CPUs, memory, disk size, kernel and image. When any of them changes, vm create
boots cold and image warm makes a new template. image show lists an image's
templates; image rm removes them with the image.

Under QEMU a template's RAM is a file-backed memory backend and its device
state a migration; under Firecracker (--vmm firecracker) it is a full
snapshot (PUT /snapshot/create), which each clone loads with its own TAP and
vsock socket. A VM with shared folders (--mount) is never a clone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkGivenFlags(cmd); err != nil {
				return err
			}
			p.Image = args[0]
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
			t, err := withProgress(cmd, pf, func(ctx context.Context) (api.Template, error) {
				var t api.Template
				err := c.Call(ctx, api.MethodImageWarm, p, &t)
				return t, err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), t)
			}
			how := fmt.Sprintf("made in %s", (time.Duration(t.BuildSeconds * float64(time.Second))).Round(100*time.Millisecond))
			if t.Reused {
				how = "already warm"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "template %s of image %s (%d CPUs, %d MiB, %s disk, %s) %s; %s on disk\n",
				t.Key[:12], t.Image, t.CPUs, t.MemoryMiB, units.IEC(t.DiskBytes), t.VMM, how, units.IEC(t.SizeBytes))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.CPUs, "cpus", 0, "virtual CPUs of the clones (default: vm create's)")
	f.IntVar(&p.MemoryMiB, "memory", 0, "memory of the clones in MiB (default: vm create's)")
	f.StringVar(&disk, "disk", "", "disk size of the clones, e.g. 8G (default: vm create's)")
	f.StringVar(&p.VMM, "vmm", "", "virtual machine monitor: qemu or firecracker (default: the best available)")
	f.BoolVar(&asJSON, "json", false, "print the template as JSON")
	pf = addProgressFlags(cmd)
	return cmd
}
