package vm

import (
	"testing"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/store"
)

func TestDeriveState(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Facts
		want string
	}{
		{"creating row", Facts{Desired: store.DesiredCreating}, api.StateCreating},
		{"never started", Facts{Desired: store.DesiredStopped, DriverKnown: true}, api.StateStopped},
		{"start in progress", Facts{Desired: store.DesiredRunning, Op: "starting", DriverKnown: true}, api.StateStarting},
		{"stop in progress", Facts{Desired: store.DesiredRunning, Op: "stopping", HasDriverState: true, ProcessAlive: true, DriverKnown: true}, api.StateStopping},
		{"alive", Facts{Desired: store.DesiredRunning, HasDriverState: true, ProcessAlive: true, DriverKnown: true}, api.StateRunning},
		{"alive although desired stopped: facts win", Facts{Desired: store.DesiredStopped, HasDriverState: true, ProcessAlive: true, DriverKnown: true}, api.StateRunning},
		{"paused", Facts{Desired: store.DesiredRunning, HasDriverState: true, ProcessAlive: true, Paused: true, DriverKnown: true}, api.StatePaused},
		{"stop of a paused VM in progress", Facts{Desired: store.DesiredRunning, Op: "stopping", HasDriverState: true, ProcessAlive: true, Paused: true, DriverKnown: true}, api.StateStopping},
		{"paused, but the process vanished", Facts{Desired: store.DesiredRunning, HasDriverState: true, Paused: true, DriverKnown: true}, api.StateBroken},
		{"process vanished", Facts{Desired: store.DesiredRunning, HasDriverState: true, DriverKnown: true}, api.StateBroken},
		{"driver unavailable", Facts{Desired: store.DesiredRunning, HasDriverState: true}, api.StateUnknown},
		{"state from a newer daemon", Facts{Desired: store.DesiredRunning, StateUnreadable: true, DriverKnown: true}, api.StateUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DeriveState(tc.f); got != tc.want {
				t.Fatalf("DeriveState(%+v) = %q, want %q", tc.f, got, tc.want)
			}
		})
	}
}
