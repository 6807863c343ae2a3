package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bangerhq/banger/internal/api"
)

// run executes the CLI in this process with args and returns its error
// and output (stdout and stderr together).
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// commands returns every command of the tree but cobra's hidden ones, by
// path ("banger vm ssh").
func commands(root *cobra.Command) map[string]*cobra.Command {
	out := map[string]*cobra.Command{}
	walk(root, func(c *cobra.Command) {
		if !c.Hidden {
			out[c.CommandPath()] = c
		}
	})
	return out
}

// TestCommandTree walks the whole command tree and checks finishTree's
// rules for every command, so a command added later is checked too.
func TestCommandTree(t *testing.T) {
	root := NewRoot()
	cmds := commands(root)
	if len(cmds) < 20 {
		t.Fatalf("only %d commands in the tree", len(cmds))
	}
	for path, cmd := range cmds {
		args := strings.Fields(path)[1:]
		if cmd.HasSubCommands() {
			t.Run(path+" refuses an unknown subcommand", func(t *testing.T) {
				out, err := run(t, append(args, "frobnicate")...)
				if err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
					t.Fatalf("err = %v, want an unknown command error (output %q)", err, out)
				}
				if code := Main(context.Background(), append(args, "frobnicate")); code != 1 {
					t.Fatalf("exit status %d, want 1", code)
				}
			})
			t.Run(path+" alone prints its help", func(t *testing.T) {
				out, err := run(t, args...)
				if err != nil || !strings.Contains(out, "Available Commands:") {
					t.Fatalf("err = %v, output %q", err, out)
				}
			})
			continue
		}
		if acceptsArgs(cmd) && cmd.ValidArgsFunction == nil && len(cmd.ValidArgs) == 0 {
			words, _ := usePositionals(cmd)
			t.Errorf("%s takes arguments (Use %q, placeholders %q) that complete to nothing: name them with a placeholder argKindOf knows (NAME, FILE, ...) or set ValidArgsFunction", path, cmd.Use, words)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "image" && f.Name != "vmm" {
				return
			}
			if _, ok := cmd.GetFlagCompletionFunc(f.Name); !ok {
				t.Errorf("%s --%s has no completion", path, f.Name)
			}
		})
	}
}

func TestUnknownCommandSuggests(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "stat"}, "start"},
		{[]string{"vm", "sshh"}, "ssh"},
		{[]string{"imag"}, "image"},
		{[]string{"help", "vm", "lss"}, "ls"},
	} {
		_, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), "Did you mean this?\n") || !strings.Contains(err.Error(), "\t"+tc.want+"\n") {
			t.Errorf("%v: err = %v, want a suggestion of %s", tc.args, err, tc.want)
		}
	}
	if _, err := run(t, "version", "extra"); err == nil {
		t.Error("version accepted an extra argument")
	}
}

func TestUsePositionals(t *testing.T) {
	mk := func(use string) *cobra.Command {
		c := &cobra.Command{Use: use}
		c.Flags().BoolP("interactive", "i", false, "")
		c.Flags().StringP("workdir", "w", "", "")
		c.Flags().String("from", "", "")
		c.Flags().BoolP("recursive", "r", false, "")
		return c
	}
	for _, tc := range []struct {
		use    string
		words  []string
		repeat bool
	}{
		{"ls", nil, false},
		{"show NAME", []string{"NAME"}, false},
		{"rm NAME...", []string{"NAME"}, true},
		{"create [NAME]", []string{"NAME"}, false},
		{"ssh NAME [-- COMMAND ARGS...]", []string{"NAME"}, false},
		{"exec NAME [-i] [-w DIR] -- COMMAND ARGS...", []string{"NAME"}, false},
		{"build NAME --from SOURCE", []string{"NAME"}, false},
		{"import NAME FILE", []string{"NAME", "FILE"}, false},
		{"cp [-r] SRC DST", []string{"SRC", "DST"}, false},
		{"fetch [COMPONENT...]", []string{"COMPONENT"}, true},
	} {
		words, repeat := usePositionals(mk(tc.use))
		if !slices.Equal(words, tc.words) || repeat != tc.repeat {
			t.Errorf("%q: %q %v, want %q %v", tc.use, words, repeat, tc.words, tc.repeat)
		}
	}
}

func TestArgKindOf(t *testing.T) {
	for _, tc := range []struct {
		group, word string
		want        argKind
	}{
		{"vm", "NAME", argVM},
		{"image", "NAME", argImage},
		{"runtime", "NAME", argUnknown},
		{"vm", "IMAGE", argImage},
		{"runtime", "TARBALL|URL", argFile},
		{"vm", "COMMAND", argUnknown},
	} {
		if got := argKindOf(tc.group, tc.word); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.group, tc.word, got, tc.want)
		}
	}
}

func TestVMCompletions(t *testing.T) {
	vms := []api.VM{
		{Name: "dev", State: api.StateRunning, IP: "172.16.0.2"},
		{Name: "old", State: api.StateStopped},
		{Name: "web", State: api.StateRunning, IP: "172.16.0.3"},
	}
	names := func(cs []cobra.Completion) []string {
		var out []string
		for _, c := range cs {
			out = append(out, strings.SplitN(c, "\t", 2)[0])
		}
		return out
	}
	if got := names(vmCompletions(vms, nil, []string{api.StateRunning})); !slices.Equal(got, []string{"dev", "web"}) {
		t.Errorf("running: %q", got)
	}
	if got := names(vmCompletions(vms, nil, []string{api.StateStopped})); !slices.Equal(got, []string{"old"}) {
		t.Errorf("stopped: %q", got)
	}
	if got := names(vmCompletions(vms, []string{"dev"}, nil)); !slices.Equal(got, []string{"old", "web"}) {
		t.Errorf("all but the given: %q", got)
	}
	if got := vmCompletions(vms, nil, nil)[0]; got != "dev\trunning, 172.16.0.2" {
		t.Errorf("description: %q", got)
	}
	ims := []api.Image{{Name: "default", Source: "debian:bookworm"}, {Name: "alpine", Source: "oci:alpine"}}
	if got := names(imageCompletions(ims, []string{"alpine"})); !slices.Equal(got, []string{"default"}) {
		t.Errorf("images: %q", got)
	}
}

// TestVMArgStates checks the commands whose completion is narrowed: ssh
// offers running VMs, stop running and paused ones, pause running ones,
// resume paused ones, start stopped ones, show all of them.
func TestVMArgStates(t *testing.T) {
	root := NewRoot()
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"vm ssh", []string{api.StateRunning}},
		{"vm stop", []string{api.StateRunning, api.StatePaused}},
		{"vm start", []string{api.StateStopped}},
		{"vm pause", []string{api.StateRunning}},
		{"vm resume", []string{api.StatePaused}},
		{"vm show", nil},
	} {
		cmd, _, err := root.Find(strings.Fields(tc.path))
		if err != nil || cmd.ValidArgsFunction == nil {
			t.Fatalf("%s: %v, completion %v", tc.path, err, cmd.ValidArgsFunction != nil)
		}
		if got := vmArgStates[cmd.Name()]; !slices.Equal(got, tc.want) {
			t.Errorf("%s offers %q, want %q", tc.path, got, tc.want)
		}
	}
}
