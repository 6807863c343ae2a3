package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/units"
)

// progressMode says how a long call's progress reports are shown.
type progressMode int

const (
	// progressAuto is progressLive when the output is a terminal (and TERM
	// is not "dumb"), else progressPlain.
	progressAuto progressMode = iota
	// progressPlain prints one log line per phase, message or layer change,
	// for logs and pipes.
	progressPlain
	// progressQuiet prints nothing.
	progressQuiet
	// progressLive rewrites one line in place, for terminals. It is not a
	// --progress value: auto chooses it.
	progressLive
)

// String returns the --progress value of m.
func (m progressMode) String() string {
	switch m {
	case progressPlain:
		return "plain"
	case progressQuiet:
		return "none"
	case progressLive:
		return "live"
	}
	return "auto"
}

// Set parses a --progress value: auto, plain or none.
func (m *progressMode) Set(s string) error {
	switch s {
	case "auto":
		*m = progressAuto
	case "plain":
		*m = progressPlain
	case "none":
		*m = progressQuiet
	default:
		return fmt.Errorf("use auto, plain or none")
	}
	return nil
}

// Type names the flag's value in help.
func (m *progressMode) Type() string { return "auto|plain|none" }

// progressFlags are the --quiet and --progress flags of a command that
// shows the progress of a long call.
type progressFlags struct {
	quiet    bool
	progress progressMode
}

// addProgressFlags adds --quiet (-q) and --progress=auto|plain|none to cmd;
// the returned flags' Mode is the choice once cmd's flags are parsed.
func addProgressFlags(cmd *cobra.Command) *progressFlags {
	f := &progressFlags{}
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "show no progress (same as --progress=none)")
	cmd.Flags().Var(&f.progress, "progress", "how to show progress on stderr: auto (a live line on a terminal, else plain), plain (one line per step) or none")
	cmd.RegisterFlagCompletionFunc("progress", cobra.FixedCompletions([]string{"auto", "plain", "none"}, cobra.ShellCompDirectiveNoFileComp))
	return f
}

// Mode returns the chosen mode: progressQuiet with --quiet (whatever
// --progress says), else the --progress value, progressAuto by default.
func (f *progressFlags) Mode() progressMode {
	if f.quiet {
		return progressQuiet
	}
	return f.progress
}

// newProgressPrinter shows progress reports on w (the command's stderr) in
// mode. report shows one report and done ends the display (in live mode it
// ends the line); call done once the call returned, whatever its outcome,
// before printing anything else to w. Reports after done are ignored. Both
// are safe for concurrent use.
func newProgressPrinter(w io.Writer, mode progressMode) (report func(api.Progress), done func()) {
	if mode == progressAuto {
		mode = progressPlain
		if isTerminal(w) && os.Getenv("TERM") != "dumb" {
			mode = progressLive
		}
	}
	if mode == progressQuiet {
		return func(api.Progress) {}, func() {}
	}
	p := newPrinter(w, mode == progressLive, time.Now)
	if p.live {
		p.width = func() int { return termWidth(w) }
		p.tick(time.Second) // the elapsed time moves even without reports
	}
	return p.report, p.done
}

// withProgress runs call with a printer of its progress (in the mode pf
// chose, on cmd's stderr) in its context, which VM calls of the client
// hand their daemon's reports to (see progress.With), and ends the display
// when call returns, before the caller prints its result.
func withProgress[T any](cmd *cobra.Command, pf *progressFlags, call func(ctx context.Context) (T, error)) (T, error) {
	report, done := newProgressPrinter(cmd.ErrOrStderr(), pf.Mode())
	v, err := call(progress.With(cmd.Context(), report))
	done()
	return v, err
}

// bootFailure adds where to read more to the error of a call that booted or
// stopped VM name: the VM's whole serial console (`banger vm logs`) when
// the VM is still there (gone says a failed create removed it), and the
// daemon's log. Errors the daemon classed (not found, invalid, a failed
// precondition, ...) already say what to do and are returned unchanged.
func bootFailure(err error, name string, gone bool) error {
	var re *api.RemoteError
	if err == nil || !errors.As(err, &re) || re.Unwrap() != nil {
		return err
	}
	var where []string
	if !gone && name != "" {
		where = append(where, fmt.Sprintf("`banger vm logs %s` (its whole serial console)", name))
	}
	if dirs, derr := paths.Resolve(); derr == nil {
		where = append(where, dirs.DaemonLog()+" (the daemon's log)")
	}
	if len(where) == 0 {
		return err
	}
	return fmt.Errorf("%w\nmore in %s", err, strings.Join(where, " and "))
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// termWidth returns the columns of the terminal w, 80 when unknown.
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return 80
}

// progressPrinter renders progress reports, live or plain.
type progressPrinter struct {
	w     io.Writer
	live  bool
	now   func() time.Time
	width func() int // live: columns to fit the line in; nil: no limit

	mu         sync.Mutex
	start      time.Time    // when the printer was made: plain lines' clock
	phaseStart time.Time    // when the current phase began: live line's clock
	cur        api.Progress // the latest report
	seen       bool         // a report arrived
	drawn      string       // live: the line on screen
	ended      bool
	stopTick   chan struct{}
}

func newPrinter(w io.Writer, live bool, now func() time.Time) *progressPrinter {
	return &progressPrinter{w: w, live: live, now: now, start: now()}
}

// tick redraws the live line every d until done, so its elapsed time moves.
func (p *progressPrinter) tick(d time.Duration) {
	p.stopTick = make(chan struct{})
	go func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.mu.Lock()
				if p.seen && !p.ended {
					p.draw()
				}
				p.mu.Unlock()
			case <-p.stopTick:
				return
			}
		}
	}()
}

func (p *progressPrinter) report(r api.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	prev, first := p.cur, !p.seen
	p.cur, p.seen = r, true
	if first || r.Phase != prev.Phase {
		p.phaseStart = p.now()
	}
	if p.live {
		p.draw()
		return
	}
	// Plain: a line per layer done, phase begun or message changed; never
	// one per byte.
	if !first && prev.Layer > 0 && (r.Phase != prev.Phase || r.Layer != prev.Layer) {
		p.plainLine(prev.Phase + ": " + layerDone(prev))
	}
	switch {
	case first || r.Phase != prev.Phase:
		if r.Message != "" {
			p.plainLine(r.Phase + ": " + r.Message)
		} else {
			p.plainLine(r.Phase)
		}
	case r.Message != prev.Message && r.Message != "":
		p.plainLine(r.Phase + ": " + r.Message)
	}
}

func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.ended = true
	if p.stopTick != nil {
		close(p.stopTick)
	}
	switch {
	case p.live && p.drawn != "":
		fmt.Fprint(p.w, "\n")
	case !p.live && p.cur.Layer > 0 && p.cur.Total > 0 && p.cur.Done >= p.cur.Total:
		// The last layer finished and no report followed it.
		p.plainLine(p.cur.Phase + ": " + layerDone(p.cur))
	}
}

// plainLine prints "[  3.1s] text": seconds since the printer was made.
func (p *progressPrinter) plainLine(text string) {
	fmt.Fprintf(p.w, "[%5.1fs] %s\n", p.now().Sub(p.start).Seconds(), text)
}

// draw rewrites the live line when it changed: carriage return, the line
// cut to the terminal's width (a wrapped line could not be rewritten), and
// clear to the end of the line.
func (p *progressPrinter) draw() {
	line := p.liveLine()
	if p.width != nil {
		if limit, rs := p.width()-1, []rune(line); limit > 0 && len(rs) > limit {
			line = string(rs[:limit])
		}
	}
	if line == p.drawn {
		return
	}
	p.drawn = line
	fmt.Fprint(p.w, "\r"+line+"\x1b[K")
}

// liveLine is e.g. "pull  layer 2/3  41.2 MiB / 120 MiB  [======>             ]  4s"
// or "customize  installing with apt: openssh-server  12s".
func (p *progressPrinter) liveLine() string {
	r := p.cur
	parts := []string{r.Phase}
	if r.Layer > 0 {
		parts = append(parts, layerOf(r))
	}
	if r.Message != "" {
		parts = append(parts, r.Message)
	}
	switch {
	case r.Total > 0:
		parts = append(parts, units.IEC(r.Done)+" / "+units.IEC(r.Total), progressBar(r.Done, r.Total, 20))
	case r.Done > 0:
		parts = append(parts, units.IEC(r.Done))
	}
	parts = append(parts, p.now().Sub(p.phaseStart).Round(time.Second).String())
	return strings.Join(parts, "  ")
}

// layerOf is "layer 2/3", or "layer 2" when the count is unknown.
func layerOf(r api.Progress) string {
	if r.Layers > 0 {
		return fmt.Sprintf("layer %d/%d", r.Layer, r.Layers)
	}
	return fmt.Sprintf("layer %d", r.Layer)
}

// layerDone is "layer 2/3 done (120 MiB)" for the layer of r, which has
// ended: its size is Total when known (the last report of a layer may have
// been coalesced away), else the bytes seen.
func layerDone(r api.Progress) string {
	s := layerOf(r) + " done"
	switch {
	case r.Total > 0:
		s += " (" + units.IEC(r.Total) + ")"
	case r.Done > 0:
		s += " (" + units.IEC(r.Done) + ")"
	}
	return s
}

// progressBar is "[=====>    ]" with width cells between the brackets.
func progressBar(done, total int64, width int) string {
	n := 0
	if total > 0 && done > 0 {
		n = int(float64(width) * float64(min(done, total)) / float64(total))
	}
	if n >= width {
		return "[" + strings.Repeat("=", width) + "]"
	}
	return "[" + strings.Repeat("=", n) + ">" + strings.Repeat(" ", width-n-1) + "]"
}
