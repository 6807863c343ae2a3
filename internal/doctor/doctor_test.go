package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

// fixture is a private host for the checks: a runtime bundle, XDG dirs, a
// $PATH directory and /dev and /proc stand-ins, all under t.TempDir(). It
// starts bare: no bundle files, no executables, no device nodes, a process
// without capabilities running as root.
type fixture struct {
	root string
	rt   string // runtime bundle directory
	bin  string // the only $PATH directory
	env  *Env
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{root: root, rt: filepath.Join(root, "runtime"), bin: filepath.Join(root, "bin")}
	mkdir(t, f.rt)
	mkdir(t, f.bin)
	mkdir(t, filepath.Join(root, "dev"))
	dirs := paths.Dirs{
		Config:  filepath.Join(root, "config", "banger"),
		State:   filepath.Join(root, "state", "banger"),
		Data:    filepath.Join(root, "data", "banger"),
		Cache:   filepath.Join(root, "cache", "banger"),
		Runtime: filepath.Join(root, "run", "banger"),
	}
	e := NewEnv(dirs, config.Config{})
	e.Runtime = bundle.Dir{Path: f.rt, How: "test fixture"}
	e.PATH = f.bin
	e.SbinDirs = nil
	e.DevKVM = filepath.Join(root, "dev", "kvm")
	e.DevTUN = filepath.Join(root, "dev", "tun")
	e.DevVhostVsock = filepath.Join(root, "dev", "vhost-vsock")
	e.ProcStatus = filepath.Join(root, "status")
	e.CPUInfo = filepath.Join(root, "cpuinfo")
	e.SubIDs = subid.Files{SubUID: filepath.Join(root, "subuid"), SubGID: filepath.Join(root, "subgid"),
		Passwd: filepath.Join(root, "passwd"), Group: filepath.Join(root, "group")}
	// Root's range, as make deps gives it.
	writeFile(t, e.SubIDs.SubUID, "root:2147483648:131072\n", 0o644)
	writeFile(t, e.SubIDs.SubGID, "root:2147483648:131072\n", 0o644)
	writeFile(t, e.SubIDs.Passwd, "root:x:0:0::/root:/bin/sh\ndev:x:1000:1000::/home/dev:/bin/sh\n", 0o644)
	writeFile(t, e.SubIDs.Group, "root:x:0:\ndev:x:1000:\n", 0o644)
	e.EUID, e.User = 0, "root"
	e.TrustedUID = os.Getuid() // the owner of the fixture's files
	e.Bangerd, e.InDaemon = "", false
	e.AccelOverride = ""
	e.ProbeKVM = false
	f.env = e
	f.setCaps(t, "0000000000000000")
	return f
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// writeScript writes an executable shell script standing in for a real
// program.
func writeScript(t *testing.T, p, body string) string {
	t.Helper()
	writeFile(t, p, "#!/bin/sh\n"+body+"\n", 0o755)
	return p
}

// addTools puts stand-ins named names on the fixture's $PATH; they exit 0.
func (f *fixture) addTools(t *testing.T, names ...string) {
	for _, n := range names {
		writeScript(t, filepath.Join(f.bin, n), "exit 0")
	}
}

// setCaps writes the fixture's /proc/self/status stand-in with this CapEff.
func (f *fixture) setCaps(t *testing.T, capEff string) {
	writeFile(t, f.env.ProcStatus, "Name:\tbanger\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t"+capEff+
		"\nCapEff:\t"+capEff+"\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n", 0o644)
}

// writeRuntime fills the fixture's bundle with the kernel files.
func (f *fixture) writeRuntime(t *testing.T) {
	writeFile(t, filepath.Join(f.rt, "kernel", "vmlinux"), "not really a kernel", 0o644)
	writeFile(t, filepath.Join(f.rt, "kernel", "initrd.img"), "not really an initramfs", 0o644)
	writeFile(t, filepath.Join(f.rt, "kernel", "release"), "6.1.0-test-cloud-amd64\n", 0o644)
	mkdir(t, filepath.Join(f.rt, "kernel", "modules", "lib", "modules", "6.1.0-test-cloud-amd64"))
}

// run runs the one check with this ID against the fixture.
func (f *fixture) run(t *testing.T, id string) Result {
	t.Helper()
	for _, c := range Checks() {
		if c.ID == id {
			r := c.Run(context.Background(), f.env)
			t.Logf("%s: %s: %s (fix: %s)", id, r.Status, r.Detail, r.Fix)
			return r
		}
	}
	t.Fatalf("no check %q", id)
	return Result{}
}

func wantStatus(t *testing.T, r Result, want Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %s, want %s: %s", r.Status, want, r.Detail)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s %q lacks %q", what, s, sub)
		}
	}
}

func TestChecksAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Checks() {
		if c.ID == "" || c.Title == "" || c.Run == nil {
			t.Errorf("check %+v lacks an ID, title or Run", c)
		}
		if seen[c.ID] {
			t.Errorf("duplicate check ID %q", c.ID)
		}
		seen[c.ID] = true
		for _, p := range append(slices.Clone(c.Concerns), c.Strict...) {
			if !slices.Contains(Purposes(), p) {
				t.Errorf("check %s concerns unknown purpose %q", c.ID, p)
			}
		}
	}
	for _, p := range Purposes() {
		n := 0
		for _, c := range Checks() {
			if c.concerns(p) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no check concerns %s", p)
		}
	}
}

func TestBlocks(t *testing.T) {
	c := Check{ID: "x", Concerns: []Purpose{PurposeVMStart}, Strict: []Purpose{PurposeFirecracker}}
	for _, tc := range []struct {
		p    Purpose
		s    Status
		want bool
	}{
		{PurposeVMStart, StatusFail, true},
		{PurposeVMStart, StatusWarn, false},
		{PurposeVMStart, StatusSkip, false},
		{PurposeFirecracker, StatusFail, true},
		{PurposeFirecracker, StatusWarn, true},
		{PurposeFirecracker, StatusSkip, false},
		{PurposeFirecracker, StatusOK, false},
		{PurposeImageBuild, StatusFail, false},
	} {
		if got := c.Blocks(tc.p, Result{Status: tc.s}); got != tc.want {
			t.Errorf("Blocks(%s, %s) = %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

func TestRunReportAndJSON(t *testing.T) {
	f := newFixture(t)
	rep := Run(context.Background(), f.env, Filter{})
	if len(rep.Checks) != len(Checks()) {
		t.Fatalf("%d findings for %d checks", len(rep.Checks), len(Checks()))
	}
	for i, c := range Checks() {
		if rep.Checks[i].ID != c.ID || rep.Checks[i].Title != c.Title {
			t.Errorf("finding %d is %s, want %s (check order)", i, rep.Checks[i].ID, c.ID)
		}
	}
	s := rep.Summary
	if s.OK+s.Warn+s.Fail+s.Skip != len(rep.Checks) {
		t.Errorf("summary %+v does not add up to %d", s, len(rep.Checks))
	}
	// The bare fixture has no runtime bundle and no /dev/net/tun.
	if !rep.Failed() || s.Status != StatusFail {
		t.Errorf("bare fixture: summary %+v, want failures", s)
	}

	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Checks  []map[string]any `json:"checks"`
		Summary map[string]any   `json:"summary"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, c := range raw.Checks {
		for _, k := range []string{"id", "title", "status", "detail", "fix"} {
			if _, ok := c[k]; !ok {
				t.Errorf("JSON check %v lacks %q", c, k)
			}
		}
	}
	for _, k := range []string{"ok", "warn", "fail", "skip", "status"} {
		if _, ok := raw.Summary[k]; !ok {
			t.Errorf("JSON summary %v lacks %q", raw.Summary, k)
		}
	}
}

func TestRunFilter(t *testing.T) {
	f := newFixture(t)
	rep := Run(context.Background(), f.env, Filter{IDs: []string{IDTUN, IDVsock}})
	var ids []string
	for _, c := range rep.Checks {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, []string{IDTUN, IDVsock}) {
		t.Errorf("IDs filter ran %v", ids)
	}
	rep = Run(context.Background(), f.env, Filter{Purpose: PurposeImageBuild})
	for _, c := range rep.Checks {
		if c.ID == IDTUN || c.ID == IDQEMU {
			t.Errorf("image-build filter ran %s", c.ID)
		}
	}
	if len(rep.Checks) == 0 {
		t.Error("image-build filter ran nothing")
	}
	if rep := Run(context.Background(), f.env, Filter{IDs: []string{"no-such-check"}}); rep.Checks == nil || len(rep.Checks) != 0 {
		t.Errorf("empty selection: %+v, want an empty, non-nil list", rep.Checks)
	}
}

func TestPreflight(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	// Missing: the runtime bundle, /dev/net/tun, CAP_NET_ADMIN, every tool.
	err := Preflight(ctx, f.env, PurposeVMStart)
	if err == nil {
		t.Fatal("Preflight passed on a bare host")
	}
	if !errors.Is(err, ErrPreflight) {
		t.Errorf("error %v does not wrap ErrPreflight", err)
	}
	var pe *PreflightError
	if !errors.As(err, &pe) || pe.Purpose != PurposeVMStart {
		t.Fatalf("error %T %v is not a *PreflightError for vm-start", err, err)
	}
	msg := err.Error()
	t.Log(msg)
	wantContains(t, "preflight error", msg,
		"cannot start a VM:",
		"(runtime)", "make runtime",
		"(tun)", "sudo modprobe tun",
		"(net-admin)", "--cap-add NET_ADMIN",
		"(qemu)", "sudo apt-get install qemu-system-x86",
		"(ssh)", "sudo apt-get install openssh-client",
		"(disk-tools)", "sudo apt-get install e2fsprogs")
	for _, id := range []string{IDFirecracker, IDImageTools, IDVsock, IDKVM} {
		if strings.Contains(msg, "("+id+")") {
			t.Errorf("vm-start preflight reports %s, which does not block it", id)
		}
	}
	for _, b := range pe.Blocked {
		if b.Fix == "" {
			t.Errorf("blocking finding %s has no fix", b.ID)
		}
	}

	// Fix everything a VM start needs: the error goes away, although
	// warnings (no KVM, no Firecracker, no agent) remain.
	f.writeRuntime(t)
	fakeQEMU(t, f.bin, filepath.Join(f.root, "qemu-calls"))
	f.addTools(t, "ssh", "e2fsck", "resize2fs", "debugfs")
	f.env.DevTUN = "/dev/null" // an openable character device standing in for /dev/net/tun
	f.setCaps(t, "0000000000001000")
	if err := Preflight(ctx, f.env, PurposeVMStart); err != nil {
		t.Fatalf("vm-start preflight on a fixed host: %v", err)
	}
	if rep := Run(ctx, f.env, Filter{Purpose: PurposeVMStart}); rep.Summary.Warn == 0 {
		t.Errorf("expected warnings to remain: %+v", rep.Summary)
	}

	// Firecracker has no fallback: its absence and /dev/kvm's block it.
	err = Preflight(ctx, f.env, PurposeFirecracker)
	if err == nil {
		t.Fatal("firecracker preflight passed without firecracker")
	}
	t.Log(err)
	wantContains(t, "firecracker preflight", err.Error(), "start a VM under Firecracker", "(firecracker)",
		"firecracker not found", "firecracker-v1.16.1-x86_64.tgz", "(kvm)")

	// Image builds need their own tools, named with their packages.
	err = Preflight(ctx, f.env, PurposeImageBuild)
	if err == nil {
		t.Fatal("image-build preflight passed without mmdebstrap")
	}
	wantContains(t, "image-build preflight", err.Error(), "cannot build an image", "(image-tools)", "mmdebstrap (package mmdebstrap)",
		"sudo apt-get install mmdebstrap e2fsprogs")
	f.addTools(t, "mmdebstrap", "mkfs.ext4")
	if err := Preflight(ctx, f.env, PurposeImageBuild); err != nil {
		t.Errorf("image-build preflight with every tool: %v", err)
	}
}

// TestPreflightNeverProbes: preflight must not boot a probe VM even when
// the Env allows probing; `banger doctor` may.
func TestPreflightNeverProbes(t *testing.T) {
	f := newFixture(t)
	f.writeRuntime(t)
	calls := filepath.Join(f.root, "qemu-calls")
	fakeQEMU(t, f.bin, calls)
	f.env.DevKVM = "/dev/null" // an openable character device standing in for /dev/kvm
	f.env.ProbeKVM = true
	Preflight(context.Background(), f.env, PurposeFirecracker)
	Preflight(context.Background(), f.env, PurposeVMStart)
	if b, err := os.ReadFile(calls); err == nil {
		t.Fatalf("preflight booted a probe: %s", b)
	}
	if !f.env.ProbeKVM {
		t.Error("Preflight changed the caller's Env")
	}
	rep := Run(context.Background(), f.env, Filter{IDs: []string{IDKVMGuest}})
	if _, err := os.ReadFile(calls); err != nil {
		t.Fatalf("Run with ProbeKVM did not probe: %+v", rep.Checks)
	}
}

// TestDriverPurposes: the purpose a driver names for its preflight
// (vmm.Preflighter) must be one this package knows, or its VMs would be
// started without the checks they need.
func TestDriverPurposes(t *testing.T) {
	for _, d := range []vmm.Driver{qemu.New("", nil), firecracker.New("", nil)} {
		p := Purpose(vmm.PreflightPurpose(d, string(PurposeVMStart)))
		if !slices.Contains(Purposes(), p) {
			t.Errorf("driver %s names preflight purpose %q, which doctor does not know", d.Name(), p)
		}
	}
	if p := vmm.PreflightPurpose(firecracker.New("", nil), ""); p != string(PurposeFirecracker) {
		t.Errorf("firecracker's purpose = %q, want %q", p, PurposeFirecracker)
	}
}

func TestGuestClock(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		flags string
		want  Status
		text  string
	}{
		{"fpu tsc constant_tsc nonstop_tsc sse", StatusOK, "tsc=reliable"},
		{"fpu tsc constant_tsc sse", StatusWarn, "lacks nonstop_tsc"},
		{"fpu tsc", StatusWarn, "lacks constant_tsc and nonstop_tsc"},
		{"fpu neon", StatusOK, "no TSC"},
	} {
		if err := os.WriteFile(f.env.CPUInfo, []byte("processor\t: 0\nflags\t\t: "+tc.flags+"\n\nprocessor\t: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := checkGuestClock(context.Background(), f.env)
		if r.Status != tc.want || !strings.Contains(r.Detail, tc.text) {
			t.Errorf("flags %q: %s %q", tc.flags, r.Status, r.Detail)
		}
	}
}

func TestNamesResult(t *testing.T) {
	st := NamesStatus{Bridge: "banger0", Server: "172.30.0.1:53", Resolved: "systemd-resolved does not run here"}
	cases := []struct {
		name         string
		st           NamesStatus
		resolved     string
		resolvedRuns bool
		want         Status
		fix          string
	}{
		{"resolves", st, "172.30.0.1", false, StatusOK, ""},
		{"no resolved", st, "", false, StatusWarn, "server=/banger.internal/172.30.0.1"},
		{"resolved runs, not registered", st, "", true, StatusWarn, "resolvectl dns banger0 172.30.0.1 && resolvectl domain banger0 '~banger.internal'"},
		{"someone else answers", st, "10.0.0.9", false, StatusWarn, "dnsmasq"},
		{"no server", NamesStatus{Err: "listen udp 172.30.0.1:53: bind: permission denied"}, "", false, StatusWarn, "cap_net_bind_service"},
		{"no bridge yet", NamesStatus{}, "", false, StatusSkip, ""},
	}
	for _, c := range cases {
		r := NamesResult(c.st, c.resolved, c.resolvedRuns)
		if r.Status != c.want || !strings.Contains(r.Fix, c.fix) {
			t.Errorf("%s: %+v, want %s with a fix naming %q", c.name, r, c.want, c.fix)
		}
	}
}
