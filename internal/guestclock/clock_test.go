package guestclock

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		offset, rtt time.Duration
		want        Params
		correct     bool
	}{
		{0, ms, Params{}, false},
		{4 * ms, 2 * ms, Params{}, false},                     // within tolerance
		{20 * ms, 100 * ms, Params{}, false},                  // within what the round trip can tell
		{30 * ms, 2 * ms, Params{OffsetNanos: -30e6}, true},   // slewed back
		{-150 * ms, 2 * ms, Params{OffsetNanos: 150e6}, true}, // slewed forward
		{3 * time.Second, 2 * ms, Params{OffsetNanos: -3e9, Step: true}, true},
		{-time.Hour, 2 * ms, Params{OffsetNanos: 3600e9, Step: true}, true},
	} {
		got, ok := Decide(tc.offset, tc.rtt, 5*ms)
		if ok != tc.correct || got != tc.want {
			t.Errorf("Decide(%v, %v) = %+v %v, want %+v %v", tc.offset, tc.rtt, got, ok, tc.want, tc.correct)
		}
	}
}
