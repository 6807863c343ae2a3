package network

import (
	"regexp"
	"strings"
	"testing"
)

func TestTAPName(t *testing.T) {
	valid := regexp.MustCompile(`^bgr-[a-z0-9-]+$`)
	ids := []string{
		"",
		"a",
		"dev",
		"0f8fad5b-d9cb-469f-a165-70867728950e",
		"0f8fad5b-d9cb-469f-a165-70867728950f",
		"dev-vm-1",
		"dev-vm-2",
		"Ünïcödé VM/with spaces",
		strings.Repeat("x", 1000),
	}
	seen := map[string]string{}
	for _, id := range ids {
		name := TAPName(id)
		if len(name) > 15 {
			t.Errorf("TAPName(%q) = %q: %d bytes, want at most 15", id, name, len(name))
		}
		if !valid.MatchString(name) {
			t.Errorf("TAPName(%q) = %q: want bgr- followed by [a-z0-9-]", id, name)
		}
		if err := checkLinkName(name); err != nil {
			t.Errorf("TAPName(%q) = %q: %v", id, name, err)
		}
		if again := TAPName(id); again != name {
			t.Errorf("TAPName(%q) not stable: %q then %q", id, name, again)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("TAPName(%q) == TAPName(%q) == %q", id, other, name)
		}
		seen[name] = id
	}
	// Pin the derivation: a daemon upgraded across a change of it would no
	// longer find the TAP devices of running VMs by id.
	if got, want := TAPName("dev"), "bgr-54ta5gvdyzz"; got != want {
		t.Errorf("TAPName(dev) = %q, want %q", got, want)
	}
}

func TestCheckLinkName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"bgr0", true},
		{"bgr-abcdefghijk", true},
		{"bgr-abcdefghijkl", false}, // 16 bytes
		{"", false},
		{".", false},
		{"a/b", false},
		{"a b", false},
		{"a:b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkLinkName(tt.name); (err == nil) != tt.ok {
				t.Errorf("checkLinkName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}
