package units

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4G": 4 << 30, "512M": 512 << 20, "8GiB": 8 << 30, "1024": 1024, "1.5G": 3 << 29, "2t": 2 << 40, " 64k ": 64 << 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1G", "0", "G", "4X"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestIEC(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 4 << 30: "4 GiB", 3 << 29: "1.5 GiB", 1 << 10: "1 KiB", 704 << 20: "704 MiB"} {
		if got := IEC(n); got != want {
			t.Errorf("IEC(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		42 * time.Second:               "42s",
		14*time.Minute + 5*time.Second: "14m",
		3*time.Hour + 12*time.Minute:   "3h12m",
		47*time.Hour + 59*time.Minute:  "47h59m",
		100 * time.Hour:                "4d",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}
