package tui

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/bangerhq/banger/internal/api"
)

type mode int

const (
	modeVMs mode = iota
	modeImages
	modeConsole
)

type overlay int

const (
	overlayNone overlay = iota
	overlayForm
	overlayConfirm
	overlayHelp
)

// Model is the TUI's Bubble Tea model. Create it with New; it is used by
// pointer.
type Model struct {
	opts    Options
	ctx     context.Context
	cancel  context.CancelFunc
	backend Backend
	keys    keyMap
	help    help.Model
	spin    spinner.Model
	width   int
	height  int

	mode    mode
	overlay overlay

	vms       []api.VM
	images    []api.Image
	loaded    bool
	cursor    int
	selected  string
	offset    int
	imgCursor int

	// Polling: one fetch at a time; pollGen invalidates a pending tick
	// when a refresh was started early (after an action).
	fetching     bool
	refreshAgain bool
	pollGen      int
	connErr      error
	attempts     int

	pending  map[string]string // VM name -> what is running ("starting")
	spinning bool
	sshBusy  string

	status    string
	statusErr bool

	confirm *confirmState
	form    *createForm
	console *consoleState
	// consoleGen tells a closed console view's ticks from the open one's.
	consoleGen int
	quit       bool
}

// New returns a model for opts. The model's calls are cancelled when ctx
// is, or when the user quits.
func New(ctx context.Context, opts Options) *Model {
	opts.defaults()
	ctx, cancel := context.WithCancel(ctx)
	h := help.New()
	sp := spinner.New(spinner.WithSpinner(spinner.MiniDot))
	return &Model{
		opts: opts, ctx: ctx, cancel: cancel, backend: opts.Backend,
		keys: newKeyMap(), help: h, spin: sp,
		width: 80, height: 24,
		pending: map[string]string{},
	}
}

// Messages.
type (
	listMsg struct {
		vms     []api.VM
		images  []api.Image
		backend Backend
		err     error
	}
	tickMsg struct{ gen int }
	opMsg   struct {
		op, key string
		vm      api.VM
		err     error
		params  *api.VMCreateParams
		took    time.Duration
	}
	sshInfoMsg struct {
		name string
		info api.SSHInfo
		err  error
	}
	sshDoneMsg struct {
		name string
		err  error
	}
	pingMsg struct {
		name   string
		r      api.PingResult
		err    error
		sshErr error
	}
)

// Init starts the first fetch; the poll loop follows from it.
func (m *Model) Init() tea.Cmd { return m.fetchCmd() }

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		if m.console != nil {
			m.console.resize(m.width, m.bodyHeight()-1)
		}
		return m, nil
	case listMsg:
		return m, m.onList(msg)
	case tickMsg:
		if msg.gen != m.pollGen || m.fetching {
			return m, nil
		}
		return m, m.fetchCmd()
	case opMsg:
		return m, m.onOp(msg)
	case sshInfoMsg:
		return m, m.onSSHInfo(msg)
	case sshDoneMsg:
		return m, m.onSSHDone(msg)
	case pingMsg:
		m.onPing(msg)
		return m, m.refresh()
	case consoleMsg:
		return m, m.onConsole(msg)
	case consoleTickMsg:
		if m.console == nil || msg.gen != m.console.gen {
			return m, nil
		}
		return m, m.console.readCmd()
	case spinner.TickMsg:
		if len(m.pending) == 0 && m.sshBusy == "" {
			m.spinning = false
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case tea.KeyMsg:
		return m, m.onKey(msg)
	}
	if m.overlay == overlayForm && m.form != nil {
		return m, m.form.update(msg)
	}
	return m, nil
}

// fetchCmd lists VMs and images; while the daemon is unreachable it first
// reconnects when Options.Reconnect is set.
func (m *Model) fetchCmd() tea.Cmd {
	m.fetching = true
	b, ctx := m.backend, m.ctx
	var reconnect func(context.Context) (Backend, error)
	if m.connErr != nil {
		reconnect = m.opts.Reconnect
	}
	return func() tea.Msg {
		if reconnect != nil {
			nb, err := reconnect(ctx)
			if err != nil {
				return listMsg{err: fmt.Errorf("reconnect: %w", err)}
			}
			b = nb
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		vms, err := b.ListVMs(cctx)
		if err != nil {
			return listMsg{err: fmt.Errorf("list vms: %w", err)}
		}
		ims, err := b.ListImages(cctx)
		if err != nil {
			return listMsg{err: fmt.Errorf("list images: %w", err)}
		}
		return listMsg{vms: vms, images: ims, backend: b}
	}
}

func (m *Model) tickCmd() tea.Cmd {
	gen := m.pollGen
	return tea.Tick(m.opts.PollInterval, func(time.Time) tea.Msg { return tickMsg{gen: gen} })
}

// refresh fetches now (or right after the fetch in flight) and restarts
// the poll timer, so an action's result shows without waiting a period.
func (m *Model) refresh() tea.Cmd {
	if m.fetching {
		m.refreshAgain = true
		return nil
	}
	m.pollGen++
	return m.fetchCmd()
}

func (m *Model) onList(msg listMsg) tea.Cmd {
	m.fetching = false
	switch {
	case msg.err != nil && isDaemonError(msg.err):
		m.setStatus(errText(msg.err), true)
	case msg.err != nil:
		if m.ctx.Err() != nil {
			return nil
		}
		m.connErr = msg.err
		m.attempts++
	default:
		if msg.backend != nil {
			m.backend = msg.backend
		}
		if m.connErr != nil {
			m.setStatus("reconnected to bangerd", false)
		}
		m.connErr, m.attempts = nil, 0
		m.setVMs(msg.vms)
		m.images = msg.images
		if m.imgCursor >= len(m.images) {
			m.imgCursor = max(0, len(m.images)-1)
		}
		m.loaded = true
	}
	if m.refreshAgain {
		m.refreshAgain = false
		m.pollGen++
		return m.fetchCmd()
	}
	return m.tickCmd()
}

// setVMs replaces the list, keeping the cursor on the same VM by name.
func (m *Model) setVMs(vms []api.VM) {
	sort.SliceStable(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	m.vms = vms
	idx := -1
	for i, v := range vms {
		if v.Name == m.selected {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = min(m.cursor, len(vms)-1)
	}
	m.cursor = max(idx, 0)
	if len(vms) > 0 {
		m.selected = vms[m.cursor].Name
	} else {
		m.selected = ""
	}
}

func (m *Model) setStatus(s string, isErr bool) { m.status, m.statusErr = s, isErr }

// sel returns the VM under the cursor.
func (m *Model) sel() (api.VM, bool) {
	if m.cursor < 0 || m.cursor >= len(m.vms) {
		return api.VM{}, false
	}
	return m.vms[m.cursor], true
}

func (m *Model) startSpinner() tea.Cmd {
	if m.spinning {
		return nil
	}
	m.spinning = true
	return m.spin.Tick
}

func (m *Model) onKey(msg tea.KeyMsg) tea.Cmd {
	if msg.String() == "ctrl+c" {
		return m.quitCmd(true)
	}
	switch m.overlay {
	case overlayForm:
		return m.formKey(msg)
	case overlayConfirm:
		return m.confirmKey(msg)
	case overlayHelp:
		m.overlay = overlayNone
		if key.Matches(msg, m.keys.Quit) {
			return m.quitCmd(false)
		}
		return nil
	}
	if m.mode == modeConsole {
		return m.consoleKey(msg)
	}
	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m.quitCmd(false)
	case key.Matches(msg, k.Help):
		m.overlay = overlayHelp
		return nil
	case key.Matches(msg, k.Images):
		if m.mode == modeImages {
			m.mode = modeVMs
		} else {
			m.mode = modeImages
		}
		return nil
	case msg.String() == "esc" && m.mode == modeImages:
		m.mode = modeVMs
		return nil
	case key.Matches(msg, k.Up):
		m.move(-1)
		return nil
	case key.Matches(msg, k.Down):
		m.move(1)
		return nil
	case msg.String() == "pgup":
		m.move(-max(1, m.listRows()-1))
		return nil
	case msg.String() == "pgdown":
		m.move(max(1, m.listRows()-1))
		return nil
	case msg.String() == "home" || msg.String() == "g":
		m.move(-1 << 30)
		return nil
	case msg.String() == "end" || msg.String() == "G":
		m.move(1 << 30)
		return nil
	case key.Matches(msg, k.Create):
		m.form = newCreateForm(m.images)
		m.overlay = overlayForm
		return m.form.focusCmd()
	}
	if m.mode != modeVMs {
		return nil
	}
	vm, ok := m.sel()
	if !ok {
		return nil
	}
	switch {
	case key.Matches(msg, k.SSH):
		return m.sshCmd(vm.Name)
	case key.Matches(msg, k.Start):
		return m.runOp("start", vm.Name, "starting", nil, func(ctx context.Context, b Backend) (api.VM, error) {
			return b.StartVM(ctx, vm.Name)
		})
	case key.Matches(msg, k.Stop):
		return m.runOp("stop", vm.Name, "stopping", nil, func(ctx context.Context, b Backend) (api.VM, error) {
			return b.StopVM(ctx, vm.Name, false)
		})
	case key.Matches(msg, k.Restart):
		return m.runOp("restart", vm.Name, "restarting", nil, func(ctx context.Context, b Backend) (api.VM, error) {
			return b.RestartVM(ctx, vm.Name)
		})
	case key.Matches(msg, k.ForceStop):
		m.askConfirm(fmt.Sprintf("Force stop %s?", vm.Name),
			"The VMM is killed without a clean guest shutdown; data the guest has not written to disk is lost.",
			func() tea.Cmd {
				return m.runOp("force-stop", vm.Name, "force stopping", nil, func(ctx context.Context, b Backend) (api.VM, error) {
					return b.StopVM(ctx, vm.Name, true)
				})
			})
	case key.Matches(msg, k.Delete):
		body := "Its disk and console log are removed. This cannot be undone."
		force := vm.State != api.StateStopped
		if force {
			body = "It is " + vm.State + " and will be killed first. " + body
		}
		m.askConfirm(fmt.Sprintf("Delete VM %s?", vm.Name), body, func() tea.Cmd {
			return m.runOp("delete", vm.Name, "deleting", nil, func(ctx context.Context, b Backend) (api.VM, error) {
				return api.VM{Name: vm.Name}, b.DeleteVM(ctx, vm.Name, force)
			})
		})
	case key.Matches(msg, k.Log):
		return m.openConsole(vm)
	}
	return nil
}

func (m *Model) move(d int) {
	if m.mode == modeImages {
		m.imgCursor = max(0, min(len(m.images)-1, m.imgCursor+d))
		return
	}
	if len(m.vms) == 0 {
		return
	}
	m.cursor = max(0, min(len(m.vms)-1, m.cursor+d))
	m.selected = m.vms[m.cursor].Name
}

// quitCmd quits, first asking when operations are in flight (quitting
// closes their connections, which cancels them in the daemon).
func (m *Model) quitCmd(force bool) tea.Cmd {
	if len(m.pending) == 0 || force && m.overlay == overlayConfirm {
		m.quit = true
		m.cancel()
		return tea.Quit
	}
	names := make([]string, 0, len(m.pending))
	for n, v := range m.pending {
		names = append(names, v+" "+n)
	}
	sort.Strings(names)
	m.askConfirm("Quit while operations run?",
		"In progress: "+strings.Join(names, ", ")+". Quitting cancels them in the daemon.",
		func() tea.Cmd { m.quit = true; m.cancel(); return tea.Quit })
	return nil
}

// runOp runs one daemon action for the VM named key in the background.
func (m *Model) runOp(op, key, verb string, params *api.VMCreateParams, fn func(ctx context.Context, b Backend) (api.VM, error)) tea.Cmd {
	if v, busy := m.pending[key]; busy {
		m.setStatus(fmt.Sprintf("%s is busy (%s)", key, v), true)
		return nil
	}
	m.pending[key] = verb
	b, ctx := m.backend, m.ctx
	start := time.Now()
	run := func() tea.Msg {
		vm, err := fn(ctx, b)
		return opMsg{op: op, key: key, vm: vm, err: err, params: params, took: time.Since(start)}
	}
	return tea.Batch(run, m.startSpinner(), m.refresh())
}

var pastTense = map[string]string{
	"start": "started", "stop": "stopped", "force-stop": "force stopped",
	"restart": "restarted", "delete": "deleted", "create": "created",
}

func (m *Model) onOp(msg opMsg) tea.Cmd {
	delete(m.pending, msg.key)
	if m.ctx.Err() != nil {
		return nil
	}
	if msg.err != nil {
		text := fmt.Sprintf("%s %s: %s", msg.op, msg.key, errText(msg.err))
		m.setStatus(text, true)
		if msg.op == "create" && msg.params != nil && m.overlay == overlayNone {
			m.form = formFrom(*msg.params, m.images, errText(msg.err))
			m.overlay = overlayForm
			return tea.Batch(m.form.focusCmd(), m.refresh())
		}
		return m.refresh()
	}
	name := msg.vm.Name
	if name == "" {
		name = msg.key
	}
	text := fmt.Sprintf("%s %s in %s", pastTense[msg.op], name, roundDuration(msg.took))
	if msg.vm.IP != "" && msg.op != "delete" && msg.vm.State == api.StateRunning {
		text += fmt.Sprintf("; it runs at %s (enter to ssh)", msg.vm.IP)
	}
	m.setStatus(text, false)
	if msg.op == "create" {
		m.selected = name
	}
	return m.refresh()
}

// sshCmd fetches the VM's SSH info; onSSHInfo then hands the terminal to ssh.
func (m *Model) sshCmd(name string) tea.Cmd {
	if m.sshBusy != "" {
		return nil
	}
	m.sshBusy = name
	b, ctx := m.backend, m.ctx
	return tea.Batch(m.startSpinner(), func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := b.SSHInfo(cctx, name)
		return sshInfoMsg{name: name, info: info, err: err}
	})
}

// SSHCommand is the command the TUI runs for an SSH session to info's VM.
func (m *Model) SSHCommand(info api.SSHInfo) *exec.Cmd {
	return exec.Command(m.opts.SSHCommand, m.opts.SSHArgs(info, nil)...)
}

func (m *Model) onSSHInfo(msg sshInfoMsg) tea.Cmd {
	if msg.err != nil {
		m.sshBusy = ""
		m.setStatus(fmt.Sprintf("ssh %s: %s", msg.name, errText(msg.err)), true)
		return nil
	}
	name := msg.name
	return tea.ExecProcess(m.SSHCommand(msg.info), func(err error) tea.Msg {
		return sshDoneMsg{name: name, err: err}
	})
}

func (m *Model) onSSHDone(msg sshDoneMsg) tea.Cmd {
	if m.opts.NoRemind {
		m.onPing(pingMsg{name: msg.name, sshErr: msg.err, err: errors.New("reminder disabled")})
		return m.refresh()
	}
	b, ctx := m.backend, m.ctx
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := b.PingVM(cctx, msg.name, time.Second)
		return pingMsg{name: msg.name, r: r, err: err, sshErr: msg.err}
	}
}

// onPing writes the post-SSH status line: how ssh ended and, when the guest
// agent still answers, the same reminder `banger vm ssh` prints.
func (m *Model) onPing(msg pingMsg) {
	m.sshBusy = ""
	var parts []string
	isErr := false
	var ee *exec.ExitError
	switch {
	case errors.As(msg.sshErr, &ee):
		parts = append(parts, fmt.Sprintf("ssh exited with status %d", ee.ExitCode()))
		isErr = ee.ExitCode() == 255
	case msg.sshErr != nil:
		parts = append(parts, fmt.Sprintf("run ssh (is openssh-client installed?): %s", errText(msg.sshErr)))
		isErr = true
	}
	if msg.err == nil && msg.r.Alive {
		parts = append(parts, m.opts.Reminder(msg.r))
	} else if len(parts) == 0 {
		parts = append(parts, "ssh session to "+msg.name+" ended")
	}
	m.setStatus(strings.Join(parts, "; "), isErr)
}

// confirmState is a yes/no question guarding a destructive action.
type confirmState struct {
	title, body string
	yes         func() tea.Cmd
	prev        overlay
}

func (m *Model) askConfirm(title, body string, yes func() tea.Cmd) {
	m.confirm = &confirmState{title: title, body: body, yes: yes, prev: m.overlay}
	m.overlay = overlayConfirm
}

func (m *Model) confirmKey(msg tea.KeyMsg) tea.Cmd {
	switch msg.String() {
	case "y", "Y":
		c := m.confirm
		m.confirm, m.overlay = nil, overlayNone
		return c.yes()
	case "n", "N", "esc", "q", "enter":
		m.confirm, m.overlay = nil, overlayNone
		m.setStatus("cancelled", false)
	}
	return nil
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
