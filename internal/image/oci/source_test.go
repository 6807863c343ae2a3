package oci

import (
	"errors"
	"testing"
)

func TestParseSource(t *testing.T) {
	const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good := []struct {
		in   string
		want Source
	}{
		{"oci:docker.io/library/debian:bookworm", Source{Kind: Registry, Ref: "docker.io/library/debian:bookworm"}},
		{"oci:debian", Source{Kind: Registry, Ref: "debian"}},
		{"oci:127.0.0.1:5000/app@" + dig, Source{Kind: Registry, Ref: "127.0.0.1:5000/app@" + dig}},
		{"oci-layout:/tmp/img", Source{Kind: Layout, Path: "/tmp/img"}},
		{"oci-layout:/tmp/img:v1", Source{Kind: Layout, Path: "/tmp/img", Tag: "v1"}},
		{"oci-layout:rel/img@" + dig, Source{Kind: Layout, Path: "rel/img", Digest: dig}},
		{"oci-layout:/tmp/a:b/", Source{Kind: Layout, Path: "/tmp/a:b/"}},
		{"oci-layout:/tmp/a:b/:v2", Source{Kind: Layout, Path: "/tmp/a:b/", Tag: "v2"}},
		{"docker-archive:/tmp/x.tar", Source{Kind: DockerArchive, Path: "/tmp/x.tar"}},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSource(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
	bad := []string{
		"", "debian", "debian:bookworm", "docker:foo", "oci:", "oci:UPPER/Case", "oci-layout:",
		"oci-layout:/tmp/img:", "oci-layout:/tmp/img@sha256:zz", "oci-layout::tag", "docker-archive:",
	}
	for _, in := range bad {
		t.Run("bad/"+in, func(t *testing.T) {
			_, err := ParseSource(in)
			if !errors.Is(err, ErrBadSource) {
				t.Fatalf("ParseSource(%q) = %v, want ErrBadSource", in, err)
			}
		})
	}
}
