package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodManifest = `
schema = 1
version = "0.1.0"

[components.firecracker]
kind = "download"
version = "1.16.1"
optional = true
url = "https://example.invalid/fc.tgz"
sha256_url = "https://example.invalid/fc.tgz.sha256.txt"
  [[components.firecracker.files]]
  path = "firecracker/firecracker"
  from = "release/firecracker"
  mode = "0755"

[components.kernel]
kind = "recipe"
version = "6.1.0-56-cloud-amd64"
recipe = "scripts/make-runtime.sh"
package = "linux-image-6.1.0-56-cloud-amd64"
package_version = "6.1.192-2"
  [[components.kernel.files]]
  path = "kernel/vmlinux"
  [[components.kernel.files]]
  path = "kernel/modules"
  tree = true

[components.agent]
kind = "build"
version = "repo"
recipe = "cmd/banger-vsock-pingd"
fix = "make agent"
  [[components.agent.files]]
  path = "agent/banger-vsock-pingd"
  mode = "0755"
`

func TestParseManifestGood(t *testing.T) {
	m, err := ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "0.1.0" || len(m.Components) != 3 {
		t.Fatalf("got %+v", m)
	}
	fc := m.Components["firecracker"]
	if fc.Name != "firecracker" || fc.Pinned() || !fc.Optional || fc.Files[0].FileMode() != 0o755 {
		t.Fatalf("firecracker: %+v", fc)
	}
	if got := m.Components["kernel"].FixCommand(); got != "make runtime" {
		t.Fatalf("kernel fix %q", got)
	}
}

// The manifest at the repository root must parse.
func TestRepoManifest(t *testing.T) {
	m, err := LoadManifest(filepath.Join("..", "..", ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range KnownComponents {
		if m.Components[n] == nil {
			t.Errorf("repo manifest lacks component %s", n)
		}
	}
}

func TestParseManifestBad(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"unknown top key", `schema = 1` + "\nbogus = 2", "unknown key bogus"},
		{"unknown component key", `fix = "make agent"` + "\nsha512 = \"x\"", "unknown key components.agent.sha512"},
		{"unknown component", `[components.agent]`, `component "agnet": unknown component`},
		{"unknown kind", `kind = "build"`, `component "agent": unknown kind "tarball"`},
		{"missing kind", `kind = "build"`, `component "agent": missing field kind`},
		{"missing version", `version = "repo"`, `component "agent": missing field version`},
		{"missing url", `url = "https://example.invalid/fc.tgz"`, `component "firecracker": missing field url`},
		{"no checksum", `sha256_url = "https://example.invalid/fc.tgz.sha256.txt"`, `component "firecracker": neither sha256 nor sha256_url`},
		{"bad hex", `sha256_url = "https://example.invalid/fc.tgz.sha256.txt"`, `component "firecracker": sha256: "zz`},
		{"short hex", `sha256_url = "https://example.invalid/fc.tgz.sha256.txt"`, `component "firecracker": sha256: "abab" is 4 characters`},
		{"upper hex", `sha256_url = "https://example.invalid/fc.tgz.sha256.txt"`, `lower-case`},
		{"missing path", `path = "kernel/vmlinux"`, `component "kernel": files[0]: missing field path`},
		{"escaping path", `path = "kernel/vmlinux"`, `component "kernel": files[0] (../vmlinux): path`},
		{"bad mode", `mode = "0755"` + "\n\n[components.kernel]", `component "firecracker": files[0] (firecracker/firecracker): mode "rwx"`},
		{"missing from", `from = "release/firecracker"`, `component "firecracker": files[0] (firecracker/firecracker): missing field from`},
		{"schema", `schema = 1`, `schema = 2`},
		{"not toml", `schema = 1`, `line 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := goodManifest
			switch tc.name {
			case "unknown component":
				in = strings.Replace(in, tc.edit, `[components.agnet]`, 1)
				in = strings.Replace(in, `[[components.agent.files]]`, `[[components.agnet.files]]`, 1)
			case "unknown kind":
				in = strings.Replace(in, tc.edit, `kind = "tarball"`, 1)
			case "missing kind", "missing version", "missing url", "missing path", "missing from":
				in = strings.Replace(in, tc.edit, "", 1)
			case "no checksum":
				in = strings.Replace(in, tc.edit, "", 1)
			case "bad hex":
				in = strings.Replace(in, tc.edit, `sha256 = "`+strings.Repeat("zz", 32)+`"`, 1)
			case "short hex":
				in = strings.Replace(in, tc.edit, `sha256 = "abab"`, 1)
			case "upper hex":
				in = strings.Replace(in, tc.edit, `sha256 = "`+strings.ToUpper(hex64)+`"`, 1)
			case "escaping path":
				in = strings.Replace(in, tc.edit, `path = "../vmlinux"`, 1)
			case "bad mode":
				in = strings.Replace(in, `mode = "0755"`, `mode = "rwx"`, 1)
			case "schema":
				in = strings.Replace(in, tc.edit, `schema = 2`, 1)
			case "not toml":
				in = strings.Replace(in, tc.edit, `schema = = 1`, 1)
			default:
				in = strings.Replace(in, strings.SplitN(tc.edit, "\n", 2)[0], tc.edit, 1)
			}
			_, err := ParseManifest([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadManifestNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), ManifestName)
	if err := os.WriteFile(p, []byte("schema = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadManifest(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "missing field version") {
		t.Fatalf("got %v", err)
	}
}
