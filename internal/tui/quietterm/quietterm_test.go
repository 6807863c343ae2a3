package quietterm

import "testing"

func TestDarkBackground(t *testing.T) {
	for v, want := range map[string]bool{
		"":                true,
		"15;0":            true,
		"0;15":            false,
		"0;7":             false,
		"15;8":            true,
		"12;default;0":    true,
		"default;default": true,
		"0;42":            true,
	} {
		if got := DarkBackground(v); got != want {
			t.Errorf("COLORFGBG=%q: dark %v, want %v", v, got, want)
		}
	}
}
