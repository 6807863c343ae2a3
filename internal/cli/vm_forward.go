package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
)

func newVMForwardCmd() *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "forward NAME [SPEC]",
		Short: "Forward a host port to a port of the VM's 127.0.0.1, or list or remove forwards",
		Long: "SPEC is [HOST_ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]: connections to HOST_ADDR:HOST_PORT on this host\n" +
			"(127.0.0.1 unless given; 0.0.0.0 for every address) reach GUEST_PORT on the guest's 127.0.0.1 through\n" +
			"the guest agent, so services the guest binds to localhost are reachable too. TCP unless /udp.\n\n" +
			"Forwards are kept with the VM: they listen while it runs, after vm restart and after a daemon\n" +
			"restart. Without SPEC, lists the VM's forwards; --rm removes one.\n\n" +
			"Examples:\n" +
			"  banger vm forward dev 8080:80\n" +
			"  banger vm forward dev 0.0.0.0:5353:53/udp\n" +
			"  banger vm forward --rm dev 8080:80",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return listOrChange(cmd, args, remove, "SPEC", printForwards,
				func(c *client.Client, name, spec string) (api.VM, error) {
					return c.ForwardVM(cmd.Context(), api.VMForwardParams{Name: name, Spec: spec, Remove: remove})
				})
		},
	}
	cmd.Flags().BoolVar(&remove, "rm", false, "remove the forward SPEC")
	// NAME completes to VM names; SPEC to the VM's forwards under --rm
	// (a new one is the user's to invent).
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			return completeVMs(nil, nil)
		case len(args) == 1 && remove:
			return completeForwards(args[0])
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return cmd
}

// completeForwards offers the forward specs of VM name.
func completeForwards(name string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	c, err := completionClient()
	var v api.VM
	if err == nil {
		v, err = c.GetVM(ctx, name)
	}
	if err != nil {
		cobra.CompDebugln("no forwards: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, f := range v.Forwards {
		out = append(out, f.Spec)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// printForwards lists a VM's forwards, one a line.
func printForwards(w io.Writer, v api.VM) {
	if len(v.Forwards) == 0 {
		fmt.Fprintf(w, "%s has no forwards\n", v.Name)
		return
	}
	for _, f := range v.Forwards {
		fmt.Fprintln(w, forwardLine(f))
	}
}

// forwardLine is one forward as `vm forward` and `vm show` print it.
func forwardLine(f api.Forward) string {
	switch {
	case f.Active:
		return f.Spec + " (listening)"
	case f.Error != "":
		return f.Spec + " (not listening: " + f.Error + ")"
	default:
		return f.Spec + " (listens while the VM runs)"
	}
}

// listOrChange is the body of the commands that list or change one kind of
// a VM's settings (vm forward, vm mount): with NAME alone it lists them
// (print), refusing --rm without the item to remove (named what); with an
// item it calls change and prints the VM it returns.
func listOrChange(cmd *cobra.Command, args []string, remove bool, what string, print func(io.Writer, api.VM),
	change func(c *client.Client, name, item string) (api.VM, error)) error {
	c, err := connect(cmd.Context())
	if err != nil {
		return err
	}
	var v api.VM
	if len(args) == 1 {
		if remove {
			return fmt.Errorf("--rm needs the %s to remove: %s --rm %s %s", what, cmd.CommandPath(), args[0], what)
		}
		v, err = c.GetVM(cmd.Context(), args[0])
	} else {
		v, err = change(c, args[0], args[1])
	}
	if err != nil {
		return err
	}
	print(cmd.OutOrStdout(), v)
	return nil
}
