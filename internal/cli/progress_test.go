package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/progress"
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

// vmBootReports feeds the phases of a VM create as the daemon reports them.
func vmBootReports(clock *fakeClock, report func(api.Progress)) {
	for _, r := range []struct {
		p    api.Progress
		took time.Duration
	}{
		{api.Progress{Phase: "disk", Message: "copying image default into a 4 GiB disk"}, 400 * time.Millisecond},
		{api.Progress{Phase: "vmm", Message: "starting qemu"}, 200 * time.Millisecond},
		{api.Progress{Phase: "boot", Message: "kernel booting (qemu pid 42, tcg)"}, 9 * time.Second},
		{api.Progress{Phase: "ssh", Message: "the guest's network is up; waiting for sshd at 172.16.0.2:22"}, 3 * time.Second},
		{api.Progress{Phase: "agent", Message: "sshd answers; waiting for the guest agent"}, time.Second},
	} {
		report(r.p)
		clock.advance(r.took / 2)
		report(r.p) // repeated reports of a phase print nothing new
		clock.advance(r.took / 2)
	}
}

func TestPlainProgressOfAVMBoot(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, false, clock.now)
	vmBootReports(clock, p.report)
	p.done()
	want := strings.Join([]string{
		"[  0.0s] disk: copying image default into a 4 GiB disk",
		"[  0.4s] vmm: starting qemu",
		"[  0.6s] boot: kernel booting (qemu pid 42, tcg)",
		"[  9.6s] ssh: the guest's network is up; waiting for sshd at 172.16.0.2:22",
		"[ 12.6s] agent: sshd answers; waiting for the guest agent",
		"",
	}, "\n")
	if got := buf.String(); got != want {
		t.Fatalf("plain output:\n%s\nwant:\n%s", got, want)
	}
}

func TestLiveProgressOfAVMBoot(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var buf bytes.Buffer
	p := newPrinter(&buf, true, clock.now)
	vmBootReports(clock, p.report)
	p.draw() // the ticker, 1 s into the agent phase
	p.done()
	got := buf.String()
	for _, want := range []string{
		"\rdisk  copying image default into a 4 GiB disk  0s\x1b[K",
		"\rboot  kernel booting (qemu pid 42, tcg)  0s\x1b[K",
		"\rboot  kernel booting (qemu pid 42, tcg)  5s\x1b[K", // redrawn: the time moved
		"\ragent  sshd answers; waiting for the guest agent  1s\x1b[K\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("live output lacks %q:\n%q", want, got)
		}
	}
	if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
		t.Errorf("live output is not one rewritten line ended once: %q", got)
	}
}

func TestWithProgress(t *testing.T) {
	var errBuf bytes.Buffer
	cmd := &cobra.Command{Use: "x"}
	cmd.SetErr(&errBuf)
	cmd.SetContext(context.Background())
	pf := addProgressFlags(cmd)
	if err := cmd.ParseFlags([]string{"--progress=plain"}); err != nil {
		t.Fatal(err)
	}
	v, err := withProgress(cmd, pf, func(ctx context.Context) (string, error) {
		progress.Report(ctx, api.Progress{Phase: "disk", Message: "copying"})
		return "dev", nil
	})
	if v != "dev" || err != nil || !strings.HasSuffix(errBuf.String(), "] disk: copying\n") {
		t.Fatalf("withProgress: %q, %v; stderr %q", v, err, errBuf.String())
	}

	errBuf.Reset()
	if err := cmd.ParseFlags([]string{"-q"}); err != nil {
		t.Fatal(err)
	}
	withProgress(cmd, pf, func(ctx context.Context) (string, error) {
		progress.Report(ctx, api.Progress{Phase: "disk", Message: "copying"})
		return "", nil
	})
	if errBuf.Len() != 0 {
		t.Fatalf("--quiet printed %q", errBuf.String())
	}
}

func TestBootFailure(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	boot := &api.RemoteError{Code: api.CodeInternal, Message: `vm "dev": no SSH answer within 2m0s`}
	got := bootFailure(boot, "dev", false).Error()
	if !strings.HasPrefix(got, boot.Message+"\nmore in `banger vm logs dev` (its whole serial console) and /state/banger/bangerd.log") {
		t.Errorf("start failure: %q", got)
	}
	if !errors.Is(bootFailure(boot, "dev", false), boot) {
		t.Error("the hint hides the daemon's error")
	}
	if got := bootFailure(boot, "", true).Error(); strings.Contains(got, "vm logs") || !strings.Contains(got, "bangerd.log") {
		t.Errorf("create failure (VM removed): %q", got)
	}
	notFound := &api.RemoteError{Code: api.CodeNotFound, Message: `no VM named "dve"`}
	if got := bootFailure(notFound, "dve", false); got != error(notFound) {
		t.Errorf("a classed error got a hint: %q", got)
	}
	if bootFailure(nil, "dev", false) != nil {
		t.Error("no error became one")
	}
}
