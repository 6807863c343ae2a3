package cli

import (
	"context"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/paths"
)

// completionTimeout bounds a completion's call to the daemon: a shell waits
// for it on every TAB.
const completionTimeout = 2 * time.Second

// vmArgStates says, by vm subcommand, which VMs its NAME arguments complete
// to: commands that need a running guest offer running VMs, start offers
// stopped ones. Every other vm subcommand offers all VMs.
var vmArgStates = map[string][]string{
	"ssh":    {api.StateRunning},
	"stop":   {api.StateRunning, api.StatePaused},
	"ping":   {api.StateRunning},
	"exec":   {api.StateRunning},
	"pause":  {api.StateRunning},
	"resume": {api.StatePaused},
	"start":  {api.StateStopped},
}

// completionClient returns a client of the running daemon, if any.
// Completion never starts or restarts one: a TAB must not take seconds or
// change anything.
func completionClient() (*client.Client, error) {
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, err
	}
	return client.New(dirs.Socket()), nil
}

// completeVMs offers the names of the VMs in states (every VM when states
// is empty), each described by its state and address, leaving out the names
// already on the command line. Without a daemon it offers nothing (and no
// file names).
func completeVMs(given, states []string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	c, err := completionClient()
	var vms []api.VM
	if err == nil {
		vms, err = c.ListVMs(ctx)
	}
	if err != nil {
		cobra.CompDebugln("no VM names: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return vmCompletions(vms, given, states), cobra.ShellCompDirectiveNoFileComp
}

// vmCompletions is completeVMs' choice over vms.
func vmCompletions(vms []api.VM, given, states []string) []cobra.Completion {
	var out []cobra.Completion
	for _, v := range vms {
		if slices.Contains(given, v.Name) || (len(states) > 0 && !slices.Contains(states, v.State)) {
			continue
		}
		desc := v.State
		if v.IP != "" {
			desc += ", " + v.IP
		}
		out = append(out, cobra.CompletionWithDesc(v.Name, desc))
	}
	return out
}

// completeImages offers the names of the images, each described by its
// source, leaving out the names already on the command line.
func completeImages(given []string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	c, err := completionClient()
	var ims []api.Image
	if err == nil {
		ims, err = c.ListImages(ctx)
	}
	if err != nil {
		cobra.CompDebugln("no image names: "+err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return imageCompletions(ims, given), cobra.ShellCompDirectiveNoFileComp
}

// imageCompletions is completeImages' choice over ims.
func imageCompletions(ims []api.Image, given []string) []cobra.Completion {
	var out []cobra.Completion
	for _, im := range ims {
		if !slices.Contains(given, im.Name) {
			out = append(out, cobra.CompletionWithDesc(im.Name, im.Source))
		}
	}
	return out
}
