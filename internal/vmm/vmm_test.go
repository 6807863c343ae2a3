package vmm

import (
	"encoding/json"
	"errors"
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
