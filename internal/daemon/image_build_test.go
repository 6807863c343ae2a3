package daemon

import (
	"errors"
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
