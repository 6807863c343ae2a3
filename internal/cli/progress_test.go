package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

const mib = 1 << 20

// buildReports feeds a typical OCI build to report, moving the clock: two
// layers pulled with many byte updates, then customize and mkfs.
func buildReports(clock *fakeClock, report func(api.Progress)) {
	report(api.Progress{Phase: "pull", Message: "docker.io/library/debian:bookworm"})
	for layer, total := range []int64{50 * mib, 120 * mib} {
		for done := int64(0); done <= total; done += total / 100 {
			report(api.Progress{Phase: "pull", Message: "docker.io/library/debian:bookworm",
				Layer: layer + 1, Layers: 2, Done: done, Total: total})
			clock.advance(15 * time.Millisecond)
		}
	}
	report(api.Progress{Phase: "customize", Message: "installing with apt: openssh-server"})
	clock.advance(6 * time.Second)
	report(api.Progress{Phase: "customize", Message: "writing /etc/hostname"})
	clock.advance(time.Second)
	report(api.Progress{Phase: "mkfs"})
	for done := int64(0); done <= 10*mib; done += mib {
		report(api.Progress{Phase: "mkfs", Done: done})
		clock.advance(100 * time.Millisecond)
	}
}

func TestPlainProgress(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, false, clock.now)
	buildReports(clock, p.report)
	p.done()
	p.report(api.Progress{Phase: "late"}) // ignored after done
	want := strings.Join([]string{
		"[  0.0s] pull: docker.io/library/debian:bookworm",
		"[  1.5s] pull: layer 1/2 done (50 MiB)",
		"[  3.0s] pull: layer 2/2 done (120 MiB)",
		"[  3.0s] customize: installing with apt: openssh-server",
		"[  9.0s] customize: writing /etc/hostname",
		"[ 10.0s] mkfs",
		"",
	}, "\n")
	if got := buf.String(); got != want {
		t.Fatalf("plain output:\n%s\nwant:\n%s", got, want)
	}
}

func TestPlainProgressLastLayerDoneAtEnd(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, false, clock.now)
	p.report(api.Progress{Phase: "pull", Layer: 1, Layers: 1, Done: 1 * mib, Total: 3 * mib})
	clock.advance(time.Second)
	p.report(api.Progress{Phase: "pull", Layer: 1, Layers: 1, Done: 3 * mib, Total: 3 * mib})
	p.done()
	p.done() // idempotent
	if got, want := buf.String(), "[  0.0s] pull\n[  1.0s] pull: layer 1/1 done (3 MiB)\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// A layer cut short (the call failed) is not reported done.
	buf.Reset()
	p = newPrinter(&buf, false, clock.now)
	p.report(api.Progress{Phase: "pull", Layer: 1, Layers: 1, Done: 1 * mib, Total: 3 * mib})
	p.done()
	if got := buf.String(); strings.Contains(got, "done") {
		t.Fatalf("unfinished layer reported done: %q", got)
	}
}

func TestLiveProgress(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, true, clock.now)

	p.report(api.Progress{Phase: "pull", Layer: 2, Layers: 3, Done: 41*mib + mib/5, Total: 120 * mib})
	want := "\rpull  layer 2/3  41.2 MiB / 120 MiB  [======>             ]  0s\x1b[K"
	if got := buf.String(); got != want {
		t.Fatalf("live line:\n got %q\nwant %q", got, want)
	}
	// The same line is not drawn again.
	clock.advance(100 * time.Millisecond)
	p.report(api.Progress{Phase: "pull", Layer: 2, Layers: 3, Done: 41*mib + mib/5, Total: 120 * mib})
	if buf.String() != want {
		t.Fatalf("unchanged line redrawn: %q", buf.String())
	}

	buf.Reset()
	p.report(api.Progress{Phase: "customize", Message: "installing with apt: openssh-server"})
	clock.advance(12 * time.Second)
	p.draw() // what the ticker does
	want = "\rcustomize  installing with apt: openssh-server  0s\x1b[K" +
		"\rcustomize  installing with apt: openssh-server  12s\x1b[K"
	if got := buf.String(); got != want {
		t.Fatalf("live line:\n got %q\nwant %q", got, want)
	}

	buf.Reset()
	p.report(api.Progress{Phase: "pull", Layer: 3, Layers: 3, Done: 120 * mib, Total: 120 * mib})
	p.report(api.Progress{Phase: "mkfs", Done: 3 * mib})
	if got := buf.String(); !strings.Contains(got, "[====================]") || !strings.HasSuffix(got, "\rmkfs  3 MiB  0s\x1b[K") {
		t.Fatalf("live lines: %q", got)
	}

	buf.Reset()
	p.done()
	p.report(api.Progress{Phase: "late"})
	if got := buf.String(); got != "\n" {
		t.Fatalf("done wrote %q, want the line ended", got)
	}
}

func TestLiveProgressFitsTheTerminal(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, true, clock.now)
	p.width = func() int { return 30 }
	p.report(api.Progress{Phase: "customize", Message: strings.Repeat("very long message ", 10)})
	line := strings.TrimSuffix(strings.TrimPrefix(buf.String(), "\r"), "\x1b[K")
	if len(line) != 29 || !strings.HasPrefix(line, "customize  very long") {
		t.Fatalf("line not cut to 29 columns: %q", line)
	}
}

func TestProgressPrinterModes(t *testing.T) {
	// Auto on something that is not a terminal is plain.
	var buf bytes.Buffer
	report, done := newProgressPrinter(&buf, progressAuto)
	report(api.Progress{Phase: "pull", Message: "debian"})
	done()
	if got := buf.String(); !strings.HasPrefix(got, "[") || !strings.HasSuffix(got, "] pull: debian\n") {
		t.Fatalf("auto on a buffer: %q", got)
	}

	buf.Reset()
	report, done = newProgressPrinter(&buf, progressQuiet)
	report(api.Progress{Phase: "pull", Message: "debian"})
	done()
	if buf.Len() != 0 {
		t.Fatalf("quiet printed %q", buf.String())
	}

	// Live mode redraws on its own (the elapsed time) until done.
	buf.Reset()
	report, done = newProgressPrinter(&buf, progressLive)
	report(api.Progress{Phase: "customize", Message: "installing"})
	done()
	if got := buf.String(); !strings.HasPrefix(got, "\rcustomize  installing  0s\x1b[K") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("live: %q", got)
	}
}

func TestProgressFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    progressMode
		wantErr bool
	}{
		{nil, progressAuto, false},
		{[]string{"--progress=plain"}, progressPlain, false},
		{[]string{"--progress", "none"}, progressQuiet, false},
		{[]string{"--progress=auto"}, progressAuto, false},
		{[]string{"-q"}, progressQuiet, false},
		{[]string{"--quiet", "--progress=plain"}, progressQuiet, false},
		{[]string{"--progress=live"}, 0, true},
		{[]string{"--progress=fancy"}, 0, true},
	} {
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		f := addProgressFlags(cmd)
		err := cmd.ParseFlags(tc.args)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "use auto, plain or none") {
				t.Errorf("%v: got %v, want an error", tc.args, err)
			}
			continue
		}
		if err != nil || f.Mode() != tc.want {
			t.Errorf("%v: mode %v, %v; want %v", tc.args, f.Mode(), err, tc.want)
		}
	}
}
