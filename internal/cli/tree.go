package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// finishTree and completeTree apply the rules every command of a tree
// follows, once the tree is built, so a command added later follows them
// without more code. finishTree:
//
//   - A group (a command with subcommands and no Run of its own) prints
//     its help when called alone and refuses anything else with an
//     "unknown command" error, suggestions for near misses and exit
//     status 1 (cobra would print the help and exit 0). `banger help X`
//     refuses an unknown X the same way.
//   - A command that says nothing about arguments takes none, unless its
//     Use line names some.
//
// completeTree, which only a completion request (`banger __complete ...`)
// needs: it is the larger part of building the tree, which every command
// pays for at start-up.
//
//   - Positional arguments complete from the placeholders of the Use line
//     (see argKindOf): VM names for NAME under `vm`, image names for NAME
//     under `image`, files for FILE, SRC, DST, ... A command whose
//     placeholder means something else (a new name, say) sets its own
//     ValidArgsFunction, which is kept.
//   - Flags complete by name: --image to image names, --vmm to the VMMs,
//     numbers and durations to nothing (not file names).
//
// CompanionRoot applies both to the tree of the commands another binary
// runs for banger. TestCommandTree walks the tree and fails when a command
// escapes a rule.
func finishTree(root *cobra.Command) {
	root.SetHelpCommand(newHelpCmd())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root, func(cmd *cobra.Command) {
		if cmd.HasSubCommands() {
			if cmd.Run == nil && cmd.RunE == nil {
				cmd.Args = cobra.ArbitraryArgs
				cmd.RunE = runGroup
			}
		} else if cmd.Args == nil {
			cmd.Args = cobra.NoArgs
			if words, _ := usePositionals(cmd); len(words) > 0 {
				cmd.Args = cobra.ArbitraryArgs
			}
		}
	})
}

// completeTree registers the completion functions of finishTree's rules
// for every command of root that has none of its own.
func completeTree(root *cobra.Command) {
	walk(root, func(cmd *cobra.Command) {
		if cmd.ValidArgsFunction == nil && len(cmd.ValidArgs) == 0 && !cmd.HasSubCommands() {
			if f := positionalCompletion(cmd); f != nil {
				cmd.ValidArgsFunction = f
			}
		}
		completeFlagsByName(cmd)
	})
}

// walk calls fn for cmd and every command below it, parents first.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, c := range cmd.Commands() {
		walk(c, fn)
	}
}

// runGroup is the Run of a group: help without arguments, else an unknown
// command.
func runGroup(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	return unknownCommand(cmd, args[0])
}

// unknownCommand is the error for a word that names no subcommand of cmd,
// with cobra's suggestions for near misses.
func unknownCommand(cmd *cobra.Command, word string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		b.WriteString("\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n")
	}
	fmt.Fprintf(&b, "\nRun '%s --help' for its commands.", cmd.CommandPath())
	return fmt.Errorf("%s", b.String())
}

// newHelpCmd is `banger help [COMMAND...]`: cobra's help command, except
// that an unknown topic is an error (exit status 1), not a line on stdout.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND...]",
		Short: "Help about any command",
		Long:  "Help prints the help of any command: banger help vm create.",
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return unknownCommand(cmd, rest[0])
			}
			return cmd.Help()
		},
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// argKind is what a positional argument names, for completion.
type argKind int

const (
	argUnknown argKind = iota // the placeholder means nothing to finishTree
	argVM                     // an existing VM
	argImage                  // an existing image
	argFile                   // a path on this host
)

// argKindOf says what the placeholder word (NAME, FILE, ...) of a command
// under group ("vm", "image", or another top-level command) names.
func argKindOf(group, word string) argKind {
	for _, alt := range strings.Split(word, "|") {
		switch alt {
		case "VM":
			return argVM
		case "IMAGE":
			return argImage
		case "NAME":
			switch group {
			case "vm":
				return argVM
			case "image":
				return argImage
			}
		case "FILE", "PATH", "DIR", "SRC", "DST", "TARBALL":
			return argFile
		}
	}
	return argUnknown
}

// usePositionals reads the positional placeholders of cmd's Use line:
// "ssh NAME [-- COMMAND ARGS...]" has NAME; "rm NAME..." has NAME,
// repeated; "exec NAME [-i] [-w DIR] -- COMMAND" has NAME (a flag's value
// is not positional, and nothing after "--" completes). Brackets and "..."
// are dropped; repeat says the last placeholder repeats.
func usePositionals(cmd *cobra.Command) (words []string, repeat bool) {
	toks := strings.Fields(cmd.Use)
	if len(toks) > 0 {
		toks = toks[1:]
	}
	for i := 0; i < len(toks); i++ {
		tok := strings.Trim(toks[i], "[]")
		if tok == "--" || tok == "" {
			break
		}
		if strings.HasPrefix(tok, "-") {
			// A flag in the synopsis: skip its value word, if it takes one
			// and the brackets did not close on the flag itself.
			if f := lookupFlag(cmd, strings.TrimLeft(tok, "-")); f != nil && f.Value.Type() != "bool" && !strings.Contains(toks[i], "]") {
				i++
			}
			continue
		}
		repeat = strings.HasSuffix(tok, "...")
		words = append(words, strings.Trim(strings.TrimSuffix(tok, "..."), "[]"))
	}
	return words, repeat
}

func lookupFlag(cmd *cobra.Command, name string) *pflag.Flag {
	if len(name) == 1 {
		return cmd.Flags().ShorthandLookup(name)
	}
	return cmd.Flags().Lookup(name)
}

// groupOf is the top-level command cmd belongs to ("vm" for `vm ssh`).
func groupOf(cmd *cobra.Command) string {
	for ; cmd.HasParent(); cmd = cmd.Parent() {
		if !cmd.Parent().HasParent() {
			return cmd.Name()
		}
	}
	return ""
}

// positionalCompletion returns the completion of cmd's positional
// arguments derived from its Use line, nil when a placeholder is unknown
// (TestCommandTree then names it) or cmd takes no arguments.
func positionalCompletion(cmd *cobra.Command) cobra.CompletionFunc {
	words, repeat := usePositionals(cmd)
	if len(words) == 0 {
		if !acceptsArgs(cmd) {
			return cobra.NoFileCompletions
		}
		return nil
	}
	kinds := make([]argKind, len(words))
	for i, w := range words {
		if kinds[i] = argKindOf(groupOf(cmd), w); kinds[i] == argUnknown {
			return nil
		}
	}
	states := vmArgStates[cmd.Name()]
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		i := len(args)
		if i >= len(kinds) {
			if !repeat {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			i = len(kinds) - 1
		}
		switch kinds[i] {
		case argVM:
			return completeVMs(args, states)
		case argImage:
			return completeImages(args)
		}
		return nil, cobra.ShellCompDirectiveDefault
	}
}

// acceptsArgs reports whether cmd's Args rule accepts one argument.
func acceptsArgs(cmd *cobra.Command) bool {
	return cmd.Args == nil || cmd.Args(cmd, []string{"x"}) == nil
}

// completeFlagsByName registers the completion of cmd's flags that have a
// meaning wherever they appear, unless cmd registered its own.
func completeFlagsByName(cmd *cobra.Command) {
	visit := func(f *pflag.Flag) {
		if _, ok := cmd.GetFlagCompletionFunc(f.Name); ok {
			return
		}
		var fn cobra.CompletionFunc
		switch {
		case f.Name == "image":
			fn = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return completeImages(nil)
			}
		case f.Name == "vmm":
			fn = cobra.FixedCompletions([]cobra.Completion{
				cobra.CompletionWithDesc("qemu", "QEMU microvm (TCG or KVM)"),
				cobra.CompletionWithDesc("firecracker", "Firecracker (KVM only)"),
			}, cobra.ShellCompDirectiveNoFileComp)
		case isNumeric(f.Value.Type()):
			fn = cobra.NoFileCompletions
		default:
			return
		}
		cmd.RegisterFlagCompletionFunc(f.Name, fn)
	}
	cmd.LocalNonPersistentFlags().VisitAll(visit)
	cmd.PersistentFlags().VisitAll(visit)
}

func isNumeric(typ string) bool {
	switch typ {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
		"float32", "float64", "duration", "count":
		return true
	}
	return false
}
