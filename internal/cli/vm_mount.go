package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/mounts"
)

func newVMMountCmd() *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "mount NAME [SPEC]",
		Short: "Share a host folder with a stopped VM, or list or remove its shared folders",
		Long: "SPEC is HOST_DIR[:GUEST_DIR][:ro]: the guest mounts HOST_DIR at GUEST_DIR (HOST_DIR's own path\n" +
			"unless given) through virtio-fs at every start; with :ro it cannot write there. Files the guest's\n" +
			"root creates belong to the folder's owner on the host. QEMU VMs only (Firecracker has no virtio-fs).\n\n" +
			"Shared folders are fixed while a VM runs: add or remove them while it is stopped (or give them to\n" +
			"vm create --mount). Without SPEC, lists them; --rm GUEST_DIR removes one.\n\n" +
			"Examples:\n" +
			"  banger vm mount dev ~/src:/src\n" +
			"  banger vm mount dev /data:/data:ro\n" +
			"  banger vm mount --rm dev /src",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return listOrChange(cmd, args, remove, "GUEST_DIR", printMounts,
				func(c *client.Client, name, spec string) (api.VM, error) {
					if !remove {
						var err error
						if spec, err = absMount(spec); err != nil {
							return api.VM{}, err
						}
					}
					return c.MountVM(cmd.Context(), api.VMMountParams{Name: name, Spec: spec, Remove: remove})
				})
		},
	}
	cmd.Flags().BoolVar(&remove, "rm", false, "remove the shared folder at GUEST_DIR (SPEC)")
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			return completeVMs(nil, nil)
		case len(args) == 1 && !remove:
			return nil, cobra.ShellCompDirectiveFilterDirs
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return cmd
}

// absMount parses a mount spec with the working folder for a relative
// HOST_DIR and returns it with HOST_DIR absolute.
func absMount(text string) (string, error) {
	cwd, _ := os.Getwd()
	sp, err := mounts.ParseSpec(text, cwd)
	if err != nil {
		return "", err
	}
	return sp.String(), nil
}

// printMounts lists a VM's shared folders, one a line.
func printMounts(w io.Writer, v api.VM) {
	if len(v.Mounts) == 0 {
		fmt.Fprintf(w, "%s has no shared folders\n", v.Name)
		return
	}
	for _, m := range v.Mounts {
		fmt.Fprintln(w, m.Spec)
	}
}
