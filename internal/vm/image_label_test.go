package vm

import (
	"testing"

	"github.com/bangerhq/banger/internal/store"
)

func TestImageLabelShowsRemovedImages(t *testing.T) {
	for _, tc := range []struct{ name, id, want string }{
		{"default", "0123456789ab", "default"},
		{"default@0123456789ab", "0123456789ab", "default (removed)"},
		{"default@other", "0123456789ab", "default@other"},
		{"", "0123456789ab", ""},
	} {
		if got := imageLabel(store.VM{ImageName: tc.name, ImageID: tc.id}); got != tc.want {
			t.Errorf("imageLabel(%q, %q) = %q, want %q", tc.name, tc.id, got, tc.want)
		}
	}
}
