package vm

import (
	"errors"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "dev", "web-1", "0", strings.Repeat("a", 63), "a1-b2"}
	bad := []string{"", "-dev", "dev-", "Dev", "dev_1", "dev.local", strings.Repeat("a", 64), "dév", "a b", "../x", "host"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		err := ValidateName(n)
		if !errors.Is(err, api.ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", n, err)
		}
	}
}

func TestMemorableNamesAreValid(t *testing.T) {
	for i := 0; i < 200; i++ {
		if n := MemorableName(); ValidateName(n) != nil {
			t.Fatalf("generated invalid name %q", n)
		}
	}
}
