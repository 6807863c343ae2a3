package doctor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/bundle"
)

func TestRuntime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, f *fixture)
		status Status
		detail []string
	}{
		{"empty bundle", func(t *testing.T, f *fixture) {}, StatusFail,
			[]string{"found via test fixture", "lacks kernel/vmlinux, kernel/initrd.img, kernel/release, kernel/modules"}},
		{"complete", func(t *testing.T, f *fixture) { f.writeRuntime(t) }, StatusOK,
			[]string{"found via test fixture", "guest kernel 6.1.0-test-cloud-amd64"}},
		{"no initrd", func(t *testing.T, f *fixture) {
			f.writeRuntime(t)
			os.Remove(filepath.Join(f.rt, "kernel", "initrd.img"))
		}, StatusFail, []string{"lacks kernel/initrd.img"}},
		{"modules for another release", func(t *testing.T, f *fixture) {
			f.writeRuntime(t)
			writeFile(t, filepath.Join(f.rt, "kernel", "release"), "6.1.0-other\n", 0o644)
		}, StatusFail, []string{"lacks kernel/modules/lib/modules/6.1.0-other"}},
		{"modules is a file", func(t *testing.T, f *fixture) {
			f.writeRuntime(t)
			os.RemoveAll(filepath.Join(f.rt, "kernel", "modules"))
			writeFile(t, filepath.Join(f.rt, "kernel", "modules"), "", 0o644)
		}, StatusFail, []string{"lacks kernel/modules"}},
		{"no bundle directory", func(t *testing.T, f *fixture) {
			f.env.Runtime = bundle.Dir{Path: filepath.Join(f.root, "nowhere"), How: "$BANGER_RUNTIME_DIR"}
		}, StatusFail, []string{"no runtime bundle at ", "nowhere (set by $BANGER_RUNTIME_DIR)"}},
		{"not found anywhere", func(t *testing.T, f *fixture) {
			f.env.Runtime = bundle.Dir{Path: "/opt/x/runtime", How: "not found", Searched: []string{"/opt/x/lib/banger", "/opt/x/runtime"}}
		}, StatusFail, []string{"no runtime bundle found", "searched /opt/x/lib/banger, /opt/x/runtime"}},
		{"verify fails", func(t *testing.T, f *fixture) {
			f.writeRuntime(t)
			f.env.VerifyRuntime = func(_ context.Context, d bundle.Dir) error {
				return errors.New("kernel/vmlinux: sha256 mismatch")
			}
		}, StatusFail, []string{"does not verify", "sha256 mismatch"}},
		{"verify passes", func(t *testing.T, f *fixture) {
			f.writeRuntime(t)
			f.env.VerifyRuntime = func(_ context.Context, d bundle.Dir) error { return nil }
		}, StatusOK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(t, f)
			r := f.run(t, IDRuntime)
			wantStatus(t, r, tc.status)
			wantContains(t, "detail", r.Detail, tc.detail...)
			if r.Status == StatusFail {
				wantContains(t, "fix", r.Fix, "make runtime", "BANGER_RUNTIME_DIR")
			}
		})
	}
}

func TestRuntimeAgent(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.rt, AgentBundlePath)
	r := f.run(t, IDRuntimeAgent)
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, p, "missing")
	wantContains(t, "fix", r.Fix, "make runtime")

	writeFile(t, p, "static binary", 0o644)
	wantStatus(t, f.run(t, IDRuntimeAgent), StatusWarn) // not executable

	os.Chmod(p, 0o755)
	wantStatus(t, f.run(t, IDRuntimeAgent), StatusOK)

	f.env.Runtime.Path = filepath.Join(f.root, "nowhere")
	wantStatus(t, f.run(t, IDRuntimeAgent), StatusSkip)
}

func TestConfigAndSocketPath(t *testing.T) {
	f := newFixture(t)
	r := f.run(t, IDConfig)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, "defaults apply")

	f.env.ConfigErr = errors.New(`config x: strict mode: fields in the document are missing in the target struct: vmm.acel`)
	r = f.run(t, IDConfig)
	wantStatus(t, r, StatusFail)
	wantContains(t, "fix", r.Fix, "edit "+f.env.Dirs.ConfigFile())

	wantStatus(t, f.run(t, IDSocketPath), StatusOK)
	long := filepath.Join(f.root, "a-very-long-directory-name-that-goes-on-and-on-and-on-and-on-and-on-and-on-for-ever")
	f.env.Dirs.Runtime = long
	r = f.run(t, IDSocketPath)
	wantStatus(t, r, StatusFail)
	wantContains(t, "detail", r.Detail, "longer than the kernel's limit")
}

func TestRuntimeOwner(t *testing.T) {
	setup := func(t *testing.T) *fixture {
		f := newFixture(t)
		f.writeRuntime(t)
		writeFile(t, filepath.Join(f.rt, bundle.LockName), "schema = 1\n", 0o644)
		fakeQEMU(t, f.bin, filepath.Join(f.root, "calls"))
		fakeFirecracker(t, filepath.Join(f.rt, FirecrackerBundlePath))
		return f
	}
	t.Run("safe", func(t *testing.T) {
		f := setup(t)
		r := f.run(t, IDRuntimeOwner)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, f.rt, filepath.Join(f.bin, "qemu-system-x86_64"))
	})
	t.Run("not root", func(t *testing.T) {
		f := setup(t)
		os.Chmod(filepath.Join(f.rt, bundle.LockName), 0o666)
		f.env.EUID = 1000
		r := f.run(t, IDRuntimeOwner)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "not root")
	})
	t.Run("no bundle", func(t *testing.T) {
		f := newFixture(t)
		f.env.Runtime.Path = filepath.Join(f.root, "none")
		wantStatus(t, f.run(t, IDRuntimeOwner), StatusSkip)
	})
	for _, tc := range []struct {
		name  string
		path  func(f *fixture) string
		mode  os.FileMode
		want  []string
		fixes []string
	}{
		{"writable lock", func(f *fixture) string { return filepath.Join(f.rt, bundle.LockName) }, 0o664,
			[]string{"bundle.lock.toml is group-writable (mode 0664)", "StrictModes"}, []string{"chmod -R go-w"}},
		{"writable bundled firecracker", func(f *fixture) string { return filepath.Join(f.rt, FirecrackerBundlePath) }, 0o777,
			[]string{"firecracker/firecracker is group- and world-writable"}, []string{"chmod -R go-w"}},
		{"writable bundle folder", func(f *fixture) string { return f.rt }, 0o757,
			[]string{"is world-writable (mode 0757)"}, []string{"chown -R"}},
		{"writable qemu in $PATH", func(f *fixture) string { return filepath.Join(f.bin, "qemu-system-x86_64") }, 0o775,
			[]string{"qemu-system-x86_64 is group-writable (mode 0775)"}, []string{"chmod go-w " + "QEMU"}},
		// The jailer runs as root.
		{"writable jailer in $PATH", func(f *fixture) string {
			return writeScript(t, filepath.Join(f.bin, "jailer"), `echo "Jailer v1.16.1"`)
		}, 0o757,
			[]string{"jailer is world-writable (mode 0757)"}, []string{"chmod go-w " + "QEMU"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			p := tc.path(f)
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			r := f.run(t, IDRuntimeOwner)
			wantStatus(t, r, StatusFail)
			wantContains(t, "detail", r.Detail, append(tc.want, p)...)
			for _, fix := range tc.fixes {
				fix = strings.ReplaceAll(fix, "QEMU", p)
				wantContains(t, "fix", r.Fix, fix)
			}
			// vm create/start and image build stop on it.
			for _, purpose := range []Purpose{PurposeVMStart, PurposeImageBuild, PurposeFirecracker} {
				err := Preflight(context.Background(), f.env, purpose)
				var pe *PreflightError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), IDRuntimeOwner) || !strings.Contains(err.Error(), p) {
					t.Errorf("preflight %s: %v, want it blocked by %s naming %s", purpose, err, IDRuntimeOwner, p)
				}
			}
		})
	}
}
