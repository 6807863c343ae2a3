package cli

import (
	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Build, import, list, inspect, warm and remove VM images"}
	cmd.AddCommand(newImageBuildCmd(), newImageListCmd(), newImageShowCmd(), newImageImportCmd(), newImageRemoveCmd(), newImageWarmCmd())
	return cmd
}
