package hostcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/bundle"
	"github.com/bangerhq/banger/internal/cli"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/doctor"
	"github.com/bangerhq/banger/internal/testhost"
)

func runDoctor(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newDoctorCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	if errOut.Len() > 0 {
		t.Errorf("doctor wrote to stderr: %s", errOut.String())
	}
	return out.String(), err
}

func TestDoctorJSON(t *testing.T) {
	root, _ := testhost.PrivateBanger(t)
	out, err := runDoctor(t, "--json")
	var ee *cli.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		t.Fatalf("doctor with an empty runtime bundle returned %v, want *cli.ExitError{Code: 1}", err)
	}

	var rep struct {
		Checks  []map[string]json.RawMessage `json:"checks"`
		Summary map[string]json.RawMessage   `json:"summary"`
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	var ids []string
	byID := map[string]map[string]string{}
	for _, c := range rep.Checks {
		var keys []string
		fields := map[string]string{}
		for k, v := range c {
			keys = append(keys, k)
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				t.Errorf("check field %s = %s is not a string", k, v)
			}
			fields[k] = s
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"detail", "fix", "id", "status", "title"}) {
			t.Errorf("check has keys %v, want id, title, status, detail, fix", keys)
		}
		switch fields["status"] {
		case "ok", "warn", "fail", "skip":
		default:
			t.Errorf("check %s has status %q", fields["id"], fields["status"])
		}
		ids = append(ids, fields["id"])
		byID[fields["id"]] = fields
	}
	var want []string
	for _, c := range doctor.Checks() {
		want = append(want, c.ID)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("checks %v, want %v", ids, want)
	}
	if r := byID[doctor.IDRuntime]; r["status"] != "fail" || !strings.Contains(r["fix"], "make runtime") {
		t.Errorf("runtime check on an empty bundle: %v", r)
	}
	// Without a daemon the image check (the daemon's) says why it did not run.
	if r := byID[doctor.IDImageAgent]; r["status"] != "skip" || !strings.Contains(r["detail"], "bangerd is not running") ||
		!strings.Contains(r["detail"], "banger daemon start") {
		t.Errorf("image-agent check without a daemon: %v", r)
	}

	var sum struct {
		OK, Warn, Fail, Skip int
		Status               string
	}
	b, _ := json.Marshal(rep.Summary)
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ok", "warn", "fail", "skip", "status"} {
		if _, ok := rep.Summary[k]; !ok {
			t.Errorf("summary lacks %q: %s", k, b)
		}
	}
	if sum.Fail == 0 || sum.Status != "fail" || sum.OK+sum.Warn+sum.Fail+sum.Skip != len(rep.Checks) {
		t.Errorf("summary %+v for %d checks", sum, len(rep.Checks))
	}

	// doctor works without a daemon and never starts one.
	if _, err := os.Stat(filepath.Join(root, "xdg_runtime_dir", "banger")); err == nil {
		t.Error("doctor created the daemon's runtime directory")
	}
}

func TestDoctorTable(t *testing.T) {
	_, rt := testhost.PrivateBanger(t)
	out, err := runDoctor(t, "--no-probe")
	t.Log("\n" + out)
	if err == nil {
		t.Fatal("doctor with an empty runtime bundle succeeded")
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "CHECK") || !strings.Contains(lines[0], "STATUS") || !strings.Contains(lines[0], "DETAIL") {
		t.Errorf("header %q", lines[0])
	}
	// The failure's fix is printed on the line under it.
	for i, l := range lines {
		if strings.HasPrefix(l, doctor.IDRuntime+" ") {
			if !strings.Contains(l, "FAIL") || !strings.Contains(l, rt) {
				t.Errorf("runtime row %q", l)
			}
			if i+1 >= len(lines) || !strings.Contains(lines[i+1], "fix: run `make runtime`") {
				t.Errorf("no fix under the runtime row: %q", lines[i+1])
			}
		}
	}
	if !strings.Contains(out, " fail, ") {
		t.Errorf("no summary line in %s", out)
	}
}

// TestDoctorExitStatus: the command fails exactly when a check fails,
// whatever this host is like.
func TestDoctorExitStatus(t *testing.T) {
	_, rt := testhost.PrivateBanger(t)
	for _, p := range []string{"kernel/vmlinux", "kernel/initrd.img", "agent/banger-vsock-pingd"} {
		os.MkdirAll(filepath.Dir(filepath.Join(rt, p)), 0o755)
		os.WriteFile(filepath.Join(rt, p), []byte("stand-in"), 0o755)
	}
	os.WriteFile(filepath.Join(rt, "kernel", "release"), []byte("6.1.0-test\n"), 0o644)
	os.MkdirAll(filepath.Join(rt, "kernel", "modules", "lib", "modules", "6.1.0-test"), 0o755)
	os.WriteFile(filepath.Join(rt, "kernel", "modules", "lib", "modules", "6.1.0-test", "modules.dep"), nil, 0o644)
	// A complete bundle has a lock recording what was built (make runtime
	// writes it); doctor verifies the files against it.
	m, err := bundle.LoadManifest(filepath.Join("..", "..", "..", bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.GenerateLock(rt, m, bundle.LockOptions{Only: []string{"kernel", "agent"}, Warn: func(string) {}}); err != nil {
		t.Fatal(err)
	}
	out, err := runDoctor(t, "--json", "--no-probe")
	var rep doctor.Report
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		t.Fatal(jerr)
	}
	var ee *cli.ExitError
	switch {
	case rep.Failed() && (!errors.As(err, &ee) || ee.Code != 1):
		t.Errorf("failures %+v but error %v", rep.Summary, err)
	case !rep.Failed() && err != nil:
		t.Errorf("no failures but error %v", err)
	}
	for _, c := range rep.Checks {
		if c.ID == doctor.IDRuntime && c.Status != doctor.StatusOK {
			t.Errorf("runtime check on a complete bundle: %+v", c)
		}
	}
}

func TestDoctorBadConfig(t *testing.T) {
	root, _ := testhost.PrivateBanger(t)
	cfg := filepath.Join(root, "xdg_config_home", "banger", "config.toml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("[vmm]\nacel = \"kvm\"\n"), 0o644)
	out, _ := runDoctor(t, "--json", "--no-probe")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if c := rep.Checks[0]; c.ID != doctor.IDConfig || c.Status != doctor.StatusFail || !strings.Contains(c.Fix, cfg) {
		t.Errorf("config check on a bad config: %+v", c)
	}
}

// TestImageAgentFromOldDaemon: doctor says to restart a daemon too old for
// the image check rather than reporting an error.
func TestImageAgentFromOldDaemon(t *testing.T) {
	r := imageAgentFromDaemon(context.Background(), client.New(testhost.OldDaemon(t)), "/x/bangerd.log")
	if r.Status != doctor.StatusSkip || !strings.Contains(r.Detail, "old-1") || !strings.Contains(r.Detail, "banger daemon restart") {
		t.Errorf("finding from an old daemon: %+v", r)
	}
}
