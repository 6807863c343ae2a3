package imagesvc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/image/oci"
)

func TestParseBuildSource(t *testing.T) {
	ok := []struct {
		from    string
		release string
		kind    oci.Kind
	}{
		{"debian:bookworm", "bookworm", ""},
		{"debian:trixie", "trixie", ""},
		{"oci:docker.io/library/debian:bookworm", "", oci.Registry},
		{"oci:127.0.0.1:5000/x/y@sha256:" + strings.Repeat("a", 64), "", oci.Registry},
		{"oci-layout:/srv/layout:v1", "", oci.Layout},
		{"docker-archive:/tmp/app.tar", "", oci.DockerArchive},
	}
	for _, tc := range ok {
		src, err := parseBuildSource(tc.from)
		if err != nil {
			t.Errorf("%s: %v", tc.from, err)
			continue
		}
		if src.release != tc.release || src.oci.Kind != tc.kind || src.raw != tc.from {
			t.Errorf("%s: got %+v", tc.from, src)
		}
	}
	bad := map[string]string{
		"debian:":                "name a Debian release",
		"debian:book worm":       "name a Debian release",
		"debian:bullseye":        "banger builds and tests bookworm (12) and trixie (13)",
		"debian:sid":             "--from oci:docker.io/library/debian:sid",
		"debian:13":              "Debian 13 is debian:trixie",
		"ubuntu:jammy":           "not a supported source",
		"oci:":                   "not a supported source",
		"docker-archive:app.tar": "must be absolute",
		"oci-layout:./layout":    "must be absolute",
		"bookworm":               "not a supported source",
	}
	for from, want := range bad {
		_, err := parseBuildSource(from)
		if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want ErrInvalid saying %q", from, err, want)
		}
	}
}

func TestReachableNameserver(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	resolved := write("resolved", "# systemd-resolved's upstream\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
	for _, tc := range []struct {
		files []string
		want  string
	}{
		{[]string{write("plain", "search example.org\nnameserver 10.1.2.3\n")}, "10.1.2.3"},
		// systemd-resolved's stub is loopback: its upstream file answers.
		{[]string{write("stub", "nameserver 127.0.0.53\noptions edns0\n"), resolved}, "192.0.2.53"},
		{[]string{write("v6", "nameserver ::1\nnameserver 2001:db8::1\nnameserver 0.0.0.0\n")}, ""},
		{[]string{filepath.Join(dir, "missing")}, ""},
	} {
		if got := reachableNameserver(tc.files...); got != tc.want {
			t.Errorf("reachableNameserver(%v) = %q, want %q", tc.files, got, tc.want)
		}
	}
	if got := buildDNS("9.9.9.9"); got != "9.9.9.9" {
		t.Errorf("network.dns is not used: %q", got)
	}
}
