package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
)

func newImageRemoveCmd() *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Delete images (one that VMs use only with --force)",
		Long: `Delete images: the row and the image file.

An image that VMs use is refused unless --force. With --force it is removed
anyway: every VM disk is a full copy of its image (a copy-on-write clone or a
sparse copy), so those VMs keep working; they show the image as
"NAME (removed)", and the name is free for a new image at once.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			removed := []api.Image{}
			err := each(cmd, args, func(c *client.Client, name string) error {
				var im api.Image
				if err := c.Call(cmd.Context(), api.MethodImageDelete, api.ImageDeleteParams{Name: name, Force: force}, &im); err != nil {
					return err
				}
				removed = append(removed, im)
				if asJSON {
					return nil
				}
				if len(im.UsedBy) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "deleted image %s (VMs %s keep their own disks)\n", name, strings.Join(im.UsedBy, ", "))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "deleted image %s\n", name)
				}
				return nil
			})
			if asJSON {
				if jerr := printJSON(cmd.OutOrStdout(), removed); jerr != nil {
					return jerr
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete even when VMs use it (their disks are full copies)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the deleted images as JSON")
	return cmd
}
