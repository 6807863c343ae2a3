package vmlinux

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestMinimal(t *testing.T) {
	for _, pvh := range []bool{true, false} {
		info, err := CheckReader(bytes.NewReader(Minimal(pvh)))
		if err != nil {
			t.Fatalf("pvh %v: %v", pvh, err)
		}
		if info.PVH != pvh || info.Entry != 16<<20 || (pvh && info.PVHEntry != 16<<20) {
			t.Errorf("pvh %v: %+v", pvh, info)
		}
	}
}

// TestBundleKernel checks the runtime bundle's kernel (Debian's, taken out
// of its bzImage by make runtime): a PVH ELF, as Firecracker needs.
func TestBundleKernel(t *testing.T) {
	p := filepath.Join("..", "..", "..", "..", "runtime", "kernel", "vmlinux")
	if _, err := os.Stat(p); err != nil {
		testhost.Skip(t, "no runtime bundle kernel (make runtime): %v", err)
	}
	info, err := Check(p)
	if err != nil || !info.PVH {
		t.Fatalf("bundle kernel: %+v, %v", info, err)
	}
}

func TestRefused(t *testing.T) {
	bz := make([]byte, 4096)
	copy(bz[0x1fe:], []byte{0x55, 0xaa, 0xeb, 0x66, 'H', 'd', 'r', 'S'}) // boot flag, jump, signature
	if _, err := CheckReader(bytes.NewReader(bz)); !errors.Is(err, ErrBzImage) {
		t.Errorf("bzImage: %v", err)
	}
	if _, err := CheckReader(bytes.NewReader([]byte("placeholder"))); !errors.Is(err, ErrNotELF) {
		t.Errorf("text file: %v", err)
	}
	// A 32-bit ELF, a non-x86 one, one without loadable segments.
	for name, mod := range map[string]func(b []byte){
		"32-bit":      func(b []byte) { b[4] = 1 },
		"aarch64":     func(b []byte) { b[18] = 183 },
		"relocatable": func(b []byte) { b[16] = 1 },
		"no PT_LOAD":  func(b []byte) { b[64] = 4 }, // first program header becomes PT_NOTE
	} {
		b := Minimal(false)
		mod(b)
		if _, err := CheckReader(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
