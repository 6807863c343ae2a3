package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestProcInfo(t *testing.T) {
	t.Run("this machine", func(t *testing.T) {
		before := procUptime(t)
		got, err := ProcInfo("v")()
		if err != nil {
			t.Fatal(err)
		}
		after := procUptime(t)
		host, _ := os.Hostname()
		bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if got.Hostname != host || got.BootID != strings.TrimSpace(string(bootID)) || got.AgentVersion != "v" {
			t.Fatalf("got %+v; want hostname %q, boot id %q", got, host, bootID)
		}
		// /proc/uptime shows the same clock in hundredths of a second.
		if got.UptimeSeconds < before || got.UptimeSeconds > after+0.01 {
			t.Fatalf("uptime %f, not between /proc/uptime's %f and %f", got.UptimeSeconds, before, after)
		}
	})
	t.Run("boot id read once", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "boot_id")
		os.WriteFile(p, []byte("6f1c1c5e-9a1b-4d0e-8f3e-2b7f6c1d0a9e\n"), 0o644)
		info := procInfo(p, "x")
		got, err := info()
		if err != nil || got.BootID != "6f1c1c5e-9a1b-4d0e-8f3e-2b7f6c1d0a9e" {
			t.Fatalf("got %+v, %v", got, err)
		}
		os.Remove(p)
		if got, err := info(); err != nil || got.BootID != "6f1c1c5e-9a1b-4d0e-8f3e-2b7f6c1d0a9e" {
			t.Fatalf("second call: got %+v, %v", got, err)
		}
	})
	t.Run("no boot id", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := procInfo(filepath.Join(dir, "missing"), "x")(); err == nil || !strings.Contains(err.Error(), "boot id") {
			t.Fatalf("missing boot id: err = %v", err)
		}
		empty := filepath.Join(dir, "empty")
		os.WriteFile(empty, []byte("\n"), 0o644)
		if _, err := procInfo(empty, "x")(); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("empty boot id: err = %v", err)
		}
	})
}

func procUptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), " ")
	v, err := strconv.ParseFloat(first, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
