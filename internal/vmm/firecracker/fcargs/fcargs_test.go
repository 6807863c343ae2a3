package fcargs

import (
	"slices"
	"strings"
	"testing"
)

var decl = []Arg{
	{Name: "id", Value: true, Required: true},
	{Name: "api-sock", Value: true, Default: "/run/firecracker.socket"},
	{Name: "cgroup", Multiple: true},
	{Name: "daemonize"},
	{Name: "no-seccomp", Forbids: []string{"seccomp-filter"}},
	{Name: "seccomp-filter", Value: true},
}

func TestParse(t *testing.T) {
	a, err := Parse(decl, []string{"--id", "vm-1", "--cgroup", "cpu.max=1", "--daemonize", "--cgroup", "memory.max=2", "--", "--id", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Value("id"); v != "vm-1" {
		t.Errorf("id = %q", v)
	}
	if v, ok := a.Value("api-sock"); !ok || v != "/run/firecracker.socket" {
		t.Errorf("default api-sock = %q %v", v, ok)
	}
	if got := a.Values("cgroup"); !slices.Equal(got, []string{"cpu.max=1", "memory.max=2"}) {
		t.Errorf("cgroups = %q", got)
	}
	if !a.Flag("daemonize") || !slices.Equal(a.Extra, []string{"--id", "x"}) {
		t.Errorf("daemonize %v extra %q", a.Flag("daemonize"), a.Extra)
	}
}

// Each is refused by Firecracker's parser, and so here.
func TestParseRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--id=vm"}, "Found argument 'id=vm' which wasn't expected"},
		{[]string{"-id", "vm"}, "Found argument '-id' which wasn't expected"},
		{[]string{"--id", "vm", "stray"}, "Found argument 'stray'"},
		{[]string{"--id", "vm", "--id", "vm"}, "'id' was provided more than once"},
		{[]string{"--id", "--daemonize"}, "'id' requires a value"},
		{[]string{"--id"}, "'id' requires a value"},
		{[]string{"--daemonize"}, "Argument 'id' required, but not found."},
		{[]string{"--id", "vm", "--daemonize", "--daemonize"}, "more than once"},
		{[]string{"--id", "vm", "--no-seccomp", "--seccomp-filter", "f"}, "cannot be used together"},
	} {
		_, err := Parse(decl, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", c.args, err, c.want)
		}
	}
	// --help and --version skip every other check.
	if a, err := Parse(decl, []string{"--bogus", "--version"}); err != nil || !a.Version {
		t.Errorf("--version: %v %v", a, err)
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "vm-1", strings.Repeat("a", 64), "0123456789ab"} {
		if err := ValidID(ok); err != nil {
			t.Errorf("ValidID(%q) = %v", ok, err)
		}
	}
	for id, want := range map[string]string{"": "Invalid len (0)", strings.Repeat("a", 65): "Invalid len (65)", "vm_1": "Invalid char (_) at position 2", "a/b": "Invalid char (/)"} {
		if err := ValidID(id); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidID(%q) = %v, want %q", id, err, want)
		}
	}
}
