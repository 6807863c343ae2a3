// Package fcargs parses command lines the way Firecracker's own argument
// parser (utils::arg_parser, v1.16.1) does, for the Firecracker and jailer
// simulators: every argument is "--name", a value is the next argument (no
// "--name=value", no single dash) and may not start with "--", an unknown
// or repeated argument (unless it may repeat) is an error, "--help", "-h"
// and "--version" anywhere skip all other checks, and everything after the
// first "--" is handed on untouched (Extra).
package fcargs

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Arg declares one argument.
type Arg struct {
	Name     string
	Value    bool // takes a value (Multiple implies it)
	Multiple bool // may be given more than once
	Required bool
	Default  string
	Forbids  []string
}

// Args is a parsed command line.
type Args struct {
	values map[string][]string
	flags  map[string]bool
	// Extra is what followed the first "--".
	Extra []string
	// Help and Version are set when "--help"/"-h" or "--version" was
	// given; nothing else was then parsed.
	Help, Version bool
}

// Parse parses args (without the program name) against decl. Errors read
// like Firecracker's: "Found argument 'x' which wasn't expected, or isn't
// valid in this context.", "The argument 'id' requires a value, but none
// was supplied.", and so on.
func Parse(decl []Arg, args []string) (*Args, error) {
	a := &Args{values: map[string][]string{}, flags: map[string]bool{}}
	if i := slices.Index(args, "--"); i >= 0 {
		args, a.Extra = args[:i], slices.Clone(args[i+1:])
	}
	if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
		a.Help = true
		return a, nil
	}
	if slices.Contains(args, "--version") {
		a.Version = true
		return a, nil
	}
	byName := map[string]Arg{}
	for _, d := range decl {
		byName[d.Name] = d
	}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		d, known := byName[name]
		if !ok || !known {
			return nil, fmt.Errorf("Found argument '%s' which wasn't expected, or isn't valid in this context.", strings.TrimPrefix(args[i], "--"))
		}
		if _, seen := a.values[name]; (seen || a.flags[name]) && !d.Multiple {
			return nil, fmt.Errorf("The argument '%s' was provided more than once.", name)
		}
		if !d.Value && !d.Multiple {
			a.flags[name] = true
			continue
		}
		if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
			return nil, fmt.Errorf("The argument '%s' requires a value, but none was supplied.", name)
		}
		i++
		a.values[name] = append(a.values[name], args[i])
	}
	for _, d := range decl {
		_, given := a.values[d.Name]
		given = given || a.flags[d.Name]
		if d.Required && !given {
			return nil, fmt.Errorf("Argument '%s' required, but not found.", d.Name)
		}
		if !given {
			continue
		}
		for _, f := range d.Forbids {
			if slices.Contains(args, "--"+f) {
				return nil, fmt.Errorf("Argument '%s' cannot be used together with argument '%s'.", f, d.Name)
			}
		}
	}
	for _, d := range decl {
		if _, given := a.values[d.Name]; !given && d.Default != "" {
			a.values[d.Name] = []string{d.Default}
		}
	}
	return a, nil
}

// Value is the value of a single-valued argument (its default when not
// given), and whether there is one.
func (a *Args) Value(name string) (string, bool) {
	v, ok := a.values[name]
	if !ok {
		return "", false
	}
	return v[0], true
}

// Values are the values of a repeatable argument, in order.
func (a *Args) Values(name string) []string { return a.values[name] }

// Flag reports whether the flag name was given.
func (a *Args) Flag(name string) bool { return a.flags[name] }

// ValidID reports whether id is a valid Firecracker instance (and jail)
// id: 1 to 64 characters, each alphanumeric or '-' (utils::validators;
// Rust's is_alphanumeric, so non-ASCII letters and digits pass too, and
// the length counts bytes). The error reads like Firecracker's.
func ValidID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return fmt.Errorf("Invalid len (%d);  the length must be between 1 and 64", len(id))
	}
	for i, c := range []rune(id) {
		if c != '-' && !isAlphanumeric(c) {
			return fmt.Errorf("Invalid char (%c) at position %d", c, i)
		}
	}
	return nil
}

func isAlphanumeric(c rune) bool { return unicode.IsLetter(c) || unicode.IsNumber(c) }
