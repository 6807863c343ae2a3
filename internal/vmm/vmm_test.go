package vmm

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeState(t *testing.T) {
	good, _ := json.Marshal(State{Version: StateVersion, Driver: "qemu", PID: 42, StartTime: 7, TAP: "t"})
	st, err := DecodeState(good)
	if err != nil || st.PID != 42 || st.TAP != "t" {
		t.Fatalf("DecodeState(current) = %+v, %v", st, err)
	}
	for _, tc := range []struct{ blob, want string }{
		{`{"version":2,"driver":"qemu","pid":1}`, `version 2 (driver "qemu")`},
		{`{"version":0,"pid":1}`, "version 0"},
		{`{"pid":1}`, "version 0"},
		{`not json`, "invalid character"},
		{`{"version":1,"pid":"x"}`, "cannot unmarshal"},
	} {
		_, err := DecodeState([]byte(tc.blob))
		if !errors.Is(err, ErrUnreadableState) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeState(%s) = %v, want ErrUnreadableState naming %q", tc.blob, err, tc.want)
		}
	}
}

func TestDeviceGroups(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o600)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	me := Self()
	stranger := Identity{UID: me.UID + 4242, GID: me.GID + 4242}
	open := mk("open", 0o666)
	group := mk("group", 0o660)
	private := mk("private", 0o600)
	if g, err := DeviceGroups(stranger, open); err != nil || len(g) != 0 {
		t.Errorf("world-rw device: %v, %v", g, err)
	}
	if g, err := DeviceGroups(stranger, group); err != nil || len(g) != 1 || g[0] != me.GID {
		t.Errorf("group-rw device: %v, %v; want group %d", g, err, me.GID)
	}
	if g, err := DeviceGroups(me, private); err != nil || len(g) != 0 {
		t.Errorf("own device: %v, %v", g, err)
	}
	_, err := DeviceGroups(stranger, open, private)
	if err == nil || !strings.Contains(err.Error(), private) || !strings.Contains(err.Error(), "mode 0600") || !strings.Contains(err.Error(), stranger.String()) {
		t.Errorf("private device: %v", err)
	}
	if _, err := DeviceGroups(stranger, filepath.Join(dir, "none")); err == nil {
		t.Error("missing device: no error")
	}
}
