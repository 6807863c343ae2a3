package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

// TestVMCreateRefusesGivenEmptyOrZero: a flag or name given as "" or 0
// (or a negative number) is refused with what to do, before any daemon is
// asked (or started); leaving it out is how to get the default.
func TestVMCreateRefusesGivenEmptyOrZero(t *testing.T) {
	root, _ := testhost.PrivateBanger(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{""}, `the VM name "" is empty`},
		{[]string{"--name", ""}, "--name is empty"},
		{[]string{"dev", "--cpus", "0"}, "--cpus 0: give a positive number of virtual CPUs"},
		{[]string{"dev", "--cpus", "-2"}, "--cpus -2: give a positive number"},
		{[]string{"dev", "--memory", "0"}, "--memory 0: give a positive number of MiB of memory"},
		{[]string{"dev", "--memory", "-512"}, "--memory -512"},
		{[]string{"dev", "--disk", ""}, "--disk is empty"},
		{[]string{"dev", "--disk", "0"}, `--disk: invalid size "0"`},
		{[]string{"dev", "--disk", "-4G"}, `--disk: invalid size "-4G"`},
		{[]string{"dev", "--image", ""}, "--image is empty"},
		{[]string{"dev", "--vmm", ""}, "--vmm is empty"},
	} {
		cmd := newVMCreateCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(tc.args)
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("vm create %q: error %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "xdg_runtime_dir", "banger")); err == nil {
		t.Error("a refused vm create reached for the daemon")
	}
}

func TestVMPingRefusesNonPositiveTimeout(t *testing.T) {
	testhost.PrivateBanger(t)
	for _, d := range []string{"0s", "-1s"} {
		cmd := newVMPingCmd()
		cmd.SetArgs([]string{"dev", "--timeout", d})
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "give a positive duration") {
			t.Errorf("vm ping --timeout %s: %v", d, err)
		}
	}
}

func TestPrintRawList(t *testing.T) {
	for raw, want := range map[string]string{
		`{"vms":[{"a":1}]}`:       "[\n  {\n    \"a\": 1\n  }\n]\n",
		`{"vms":null}`:            "[]\n",
		`{}`:                      "[]\n",
		`{ "vms" : [ 1 ] }`:       "[\n  1\n]\n",
		`{"vms":[2],"more":true}`: "[\n  2\n]\n",
	} {
		var out bytes.Buffer
		if err := printRawList(&out, json.RawMessage(raw), "vms"); err != nil || out.String() != want {
			t.Errorf("printRawList(%s) = %q, %v; want %q", raw, out.String(), err, want)
		}
	}
	if err := printRawList(&bytes.Buffer{}, json.RawMessage(`{"vms":[}`), "vms"); err == nil {
		t.Error("a malformed answer printed")
	}
}
