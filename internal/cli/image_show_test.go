package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
)

func TestPrintImageDetail(t *testing.T) {
	im := api.Image{ID: "0123456789ab", Name: "web", Source: "oci:docker.io/library/debian:bookworm",
		Digest: "sha256:abcd", Path: "/d/images/0123456789ab/rootfs.ext4", SizeBytes: 2 << 30,
		AllocatedBytes: 700 << 20, KernelRelease: "6.1.0-18-amd64", CreatedAt: time.Now(),
		BuildSeconds: 41.3, Cached: false, CacheKey: "feed", UsedBy: []string{"a", "b"}}
	var out bytes.Buffer
	if err := printImageDetail(&out, im); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"name            web\n", "digest          sha256:abcd\n", "size            2 GiB\n",
		"allocated       700 MiB", "kernel modules  6.1.0-18-amd64\n", "build time      41.3s\n",
		"cache key       feed\n", "path            /d/images/0123456789ab/rootfs.ext4\n", "used by         a, b\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}

	im = api.Image{Name: "imp", Source: "import:disk.img", SizeBytes: 1 << 30, CreatedAt: time.Now(), BuildSeconds: 0.031, Cached: true}
	out.Reset()
	printImageDetail(&out, im)
	s = out.String()
	for _, want := range []string{"kernel modules  unknown\n", "build time      0.03s (cached)\n", "used by         no VM\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
	if strings.Contains(s, "digest") || strings.Contains(s, "cache key") {
		t.Errorf("empty fields printed:\n%s", s)
	}
}

func TestBuildTime(t *testing.T) {
	for _, tc := range []struct {
		secs   float64
		cached bool
		want   string
	}{
		{0, false, ""},
		{0, true, "cached"},
		{0.5, false, "0.50s"},
		{12.34, false, "12.3s"},
		{125.4, true, "2m5s (cached)"},
	} {
		if got := buildTime(api.Image{BuildSeconds: tc.secs, Cached: tc.cached}); got != tc.want {
			t.Errorf("buildTime(%v, %v) = %q, want %q", tc.secs, tc.cached, got, tc.want)
		}
	}
}

func TestPrintImageTable(t *testing.T) {
	var out bytes.Buffer
	printImageTable(&out, nil)
	if !strings.Contains(out.String(), "no images yet") {
		t.Fatalf("empty list: %q", out.String())
	}
	out.Reset()
	printImageTable(&out, []api.Image{{Name: "web", Source: "debian:bookworm", SizeBytes: 1 << 30, AllocatedBytes: 300 << 20,
		CreatedAt: time.Now(), UsedBy: []string{"a"}}})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ALLOCATED") || !strings.Contains(lines[1], "300 MiB") ||
		!strings.HasSuffix(lines[1], " 1") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestImageCommands(t *testing.T) {
	root := NewRoot()
	for _, args := range [][]string{{"image", "show"}, {"image", "import"}, {"image", "rm"}, {"image", "ls"}} {
		c, _, err := root.Find(args)
		if err != nil || c.Name() != args[1] {
			t.Fatalf("%v: %v", args, err)
		}
	}
	rm, _, _ := root.Find([]string{"image", "rm"})
	if rm.Flags().Lookup("force") == nil || rm.Flags().Lookup("json") == nil {
		t.Fatal("image rm lacks --force or --json")
	}
}
