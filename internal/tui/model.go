package tui

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/bangerhq/banger/internal/api"
)

// component is one part of the TUI with its own keys, Update and View
// (soft-serve's pattern). The root Model puts one page in front (the VM
// list, the image list or a console) and at most one overlay over it (the
// create form, a confirmation, the help); the front-most gets the keys.
type component interface {
	// Update handles a message while the component is in front, or a
	// message addressed to it.
	Update(msg tea.Msg) tea.Cmd
	// View renders the component in exactly height lines of at most
	// width columns.
	View(width, height int) []string
	// Keys are the component's bindings: ShortHelp is the help line,
	// FullHelp the ? view. Every key Update acts on is in FullHelp (a test
	// walks the keys to hold it to that).
	Keys() help.KeyMap
	// Title is what the title line says about the component.
	Title() string
}

// Model is the TUI's root Bubble Tea model: it owns the daemon connection,
// the data every component shows (VMs, images, operations in progress,
// the status line) and which components are in front. Create it with New;
// it is used by pointer.
type Model struct {
	opts    Options
	ctx     context.Context
	cancel  context.CancelFunc
	backend Backend
	help    help.Model
	spin    spinner.Model
	width   int
	height  int

	vms    []api.VM
	images []api.Image
	loaded bool

	// Polling: one fetch at a time; pollGen invalidates a pending tick
	// when a refresh was started early (after an action).
	fetching     bool
	refreshAgain bool
	pollGen      int
	connErr      error
	attempts     int

	pending map[string]op // VM name -> the op in progress
	// phases holds the latest progress report of each op in progress
	// (the boot's phases: disk, vmm, boot, ssh, agent), by VM name.
	phases   map[string]api.Progress
	spinning bool
	sshBusy  string

	status    string
	statusErr bool

	vmList    *vmList
	imageList *imageList
	page      component // vmList, imageList or a console
	overlay   component // nil, the form, a confirmation or the help
	// consoleGen tells a closed console's ticks from the open one's.
	consoleGen int
	quit       bool
}

// New returns a model for opts. The model's calls are cancelled when ctx
// is, or when the user quits.
func New(ctx context.Context, opts Options) *Model {
	opts.defaults()
	ctx, cancel := context.WithCancel(ctx)
	m := &Model{
		opts: opts, ctx: ctx, cancel: cancel, backend: opts.Backend,
		help: help.New(), spin: spinner.New(spinner.WithSpinner(spinner.MiniDot)),
		width: 80, height: 24,
		pending: map[string]op{}, phases: map[string]api.Progress{},
	}
	m.help.ShortSeparator = "  "
	m.vmList = newVMList(m)
	m.imageList = newImageList(m)
	m.page = m.vmList
	return m
}

// Messages of the root model.
type (
	listMsg struct {
		vms     []api.VM
		images  []api.Image
		backend Backend
		err     error
	}
	tickMsg struct{ gen int }
)

// Init starts the first fetch; the poll loop follows from it.
func (m *Model) Init() tea.Cmd { return m.fetchCmd() }

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
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
	case phaseMsg:
		if _, busy := m.pending[msg.key]; busy {
			m.phases[msg.key] = msg.report
		}
		return m, msg.next
	case sshInfoMsg:
		return m, m.onSSHInfo(msg)
	case sshDoneMsg:
		return m, m.onSSHDone(msg)
	case shellDoneMsg:
		m.onShellDone(msg)
		return m, m.refresh()
	case pingMsg:
		m.onPing(msg)
		return m, m.refresh()
	case consoleMsg, consoleTickMsg:
		if c, ok := m.page.(*console); ok {
			return m, c.Update(msg)
		}
		return m, nil
	case spinner.TickMsg:
		if len(m.pending) == 0 && m.sshBusy == "" {
			m.spinning = false
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case tea.KeyMsg:
		if key.Matches(msg, rootKeyMap.QuitNow) {
			return m, m.quitCmd(true)
		}
		return m, m.front().Update(msg)
	}
	// Anything else (a text field's cursor blink) is for the overlay.
	if m.overlay != nil {
		return m, m.overlay.Update(msg)
	}
	return m, nil
}

// front is the component that gets the keys.
func (m *Model) front() component {
	if m.overlay != nil {
		return m.overlay
	}
	return m.page
}

// showPage puts page in front (closing any overlay).
func (m *Model) showPage(page component) {
	m.page, m.overlay = page, nil
}

// openOverlay shows c over the page and returns its first command.
func (m *Model) openOverlay(c component) tea.Cmd {
	m.overlay = c
	if f, ok := c.(*createForm); ok {
		return f.focusCmd()
	}
	return nil
}

func (m *Model) closeOverlay() { m.overlay = nil }

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
		sort.SliceStable(msg.vms, func(i, j int) bool { return msg.vms[i].Name < msg.vms[j].Name })
		m.vms = msg.vms
		m.vmList.follow()
		m.images = msg.images
		m.imageList.clamp()
		m.loaded = true
	}
	if m.refreshAgain {
		m.refreshAgain = false
		m.pollGen++
		return m.fetchCmd()
	}
	return m.tickCmd()
}

func (m *Model) setStatus(s string, isErr bool) { m.status, m.statusErr = s, isErr }

func (m *Model) startSpinner() tea.Cmd {
	if m.spinning {
		return nil
	}
	m.spinning = true
	return m.spin.Tick
}

// quitCmd quits, first asking when operations are in flight (quitting
// closes their connections, which cancels them in the daemon). now quits
// anyway when that question is already asked (ctrl+c twice).
func (m *Model) quitCmd(now bool) tea.Cmd {
	_, asking := m.overlay.(*confirm)
	if len(m.pending) == 0 || now && asking {
		m.quit = true
		m.cancel()
		return tea.Quit
	}
	names := make([]string, 0, len(m.pending))
	for n, o := range m.pending {
		names = append(names, opWords[o].running+" "+n)
	}
	sort.Strings(names)
	return m.openOverlay(newConfirm(m, "Quit while operations run?",
		"In progress: "+strings.Join(names, ", ")+". Quitting cancels them in the daemon.",
		func() tea.Cmd { m.quit = true; m.cancel(); return tea.Quit }))
}

// openHelp shows every key of the component in front, over it.
func (m *Model) openHelp() tea.Cmd {
	return m.openOverlay(newHelpView(m, m.front().Keys(), m.overlay))
}
