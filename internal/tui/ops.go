package tui

import (
	"context"
	"fmt"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/progress"
)

// op is a daemon action the TUI runs on one VM.
type op int

const (
	opCreate op = iota
	opStart
	opStop
	opForceStop
	opRestart
	opPause
	opResume
	opDelete
)

// opWords are an op's name (status lines: "start dev: ..."), what the list
// shows while it runs, and what the status line says when it is done.
var opWords = map[op]struct{ name, running, done string }{
	opCreate:    {"create", "creating", "created"},
	opStart:     {"start", "starting", "started"},
	opStop:      {"stop", "stopping", "stopped"},
	opForceStop: {"force-stop", "force stopping", "force stopped"},
	opRestart:   {"restart", "restarting", "restarted"},
	opPause:     {"pause", "pausing", "paused"},
	opResume:    {"resume", "resuming", "resumed"},
	opDelete:    {"delete", "deleting", "deleted"},
}

func (o op) String() string { return opWords[o].name }

// opRequest is one op to run.
type opRequest struct {
	op     op
	name   string             // the VM; for opCreate, params.Name
	params api.VMCreateParams // opCreate
	force  bool               // opDelete: kill a running VM first
}

// key names the request's VM in the list and the status line.
func (r opRequest) key() string {
	if r.name == "" {
		return "(new vm)"
	}
	return r.name
}

// call runs r against b.
func (r opRequest) call(ctx context.Context, b Backend) (api.VM, error) {
	switch r.op {
	case opCreate:
		return b.CreateVM(ctx, r.params)
	case opStart:
		return b.StartVM(ctx, r.name)
	case opStop:
		return b.StopVM(ctx, r.name, false)
	case opForceStop:
		return b.StopVM(ctx, r.name, true)
	case opRestart:
		return b.RestartVM(ctx, r.name)
	case opPause:
		return b.PauseVM(ctx, r.name)
	case opResume:
		return b.ResumeVM(ctx, r.name)
	case opDelete:
		return api.VM{Name: r.name}, b.DeleteVM(ctx, r.name, r.force)
	}
	return api.VM{}, fmt.Errorf("unknown operation %d", r.op)
}

// opMsg is the end of a request.
type opMsg struct {
	req  opRequest
	vm   api.VM
	err  error
	took time.Duration
}

// runOp runs r in the background; the list shows its VM as in progress
// until it ends.
func (m *Model) runOp(r opRequest) tea.Cmd {
	key := r.key()
	if running, busy := m.pending[key]; busy {
		m.setStatus(fmt.Sprintf("%s is busy (%s)", key, opWords[running].running), true)
		return nil
	}
	m.pending[key] = r.op
	// The daemon's progress reports (the phases of a boot) come through
	// the call's context, as for the CLI, and on to the status line.
	reports := make(chan api.Progress, 16)
	ctx := progress.With(m.ctx, func(p api.Progress) {
		select {
		case reports <- p:
		default: // the TUI has not caught up: never hold the call
		}
	})
	b := m.backend
	start := time.Now()
	run := func() tea.Msg {
		vm, err := r.call(ctx, b)
		close(reports)
		return opMsg{req: r, vm: vm, err: err, took: time.Since(start)}
	}
	return tea.Batch(run, listenPhases(key, reports), m.startSpinner(), m.refresh())
}

// phaseMsg is a progress report of the op on the VM key; next waits for
// the following one.
type phaseMsg struct {
	key    string
	report api.Progress
	next   tea.Cmd
}

// listenPhases waits for the next report on ch, until ch is closed (the
// op ended).
func listenPhases(key string, ch <-chan api.Progress) tea.Cmd {
	return func() tea.Msg {
		p, ok := <-ch
		if !ok {
			return nil
		}
		return phaseMsg{key: key, report: p, next: listenPhases(key, ch)}
	}
}

// phaseText is how the status line shows a report: "boot, kernel booting
// (qemu pid 42, tcg)".
func phaseText(p api.Progress) string {
	if p.Message == "" {
		return p.Phase
	}
	return p.Phase + ", " + p.Message
}

func (m *Model) onOp(msg opMsg) tea.Cmd {
	r := msg.req
	delete(m.pending, r.key())
	delete(m.phases, r.key())
	if m.ctx.Err() != nil {
		return nil
	}
	if msg.err != nil {
		m.setStatus(fmt.Sprintf("%s %s: %s", r.op, r.key(), errText(msg.err)), true)
		if r.op == opCreate && m.overlay == nil {
			// The form comes back with what was typed and the daemon's
			// message, to fix and submit again.
			return tea.Batch(m.openOverlay(formFrom(m, r.params, errText(msg.err))), m.refresh())
		}
		return m.refresh()
	}
	name := msg.vm.Name
	if name == "" {
		name = r.key()
	}
	text := fmt.Sprintf("%s %s in %s", opWords[r.op].done, name, roundDuration(msg.took))
	if msg.vm.IP != "" && r.op != opDelete && msg.vm.State == api.StateRunning {
		text += fmt.Sprintf("; it runs at %s (enter to ssh)", msg.vm.IP)
	}
	m.setStatus(text, false)
	if r.op == opCreate {
		m.vmList.selected = name
	}
	return m.refresh()
}

// roundDuration keeps two or three significant digits: "40ms", "1.2s", "35s".
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
