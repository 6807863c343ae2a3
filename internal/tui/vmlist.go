package tui

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/bangerhq/banger/internal/api"
)

// vmList is the main page: the VMs with their live state, and the
// selected one's details below.
type vmList struct {
	m        *Model
	keys     vmListKeys
	cursor   int
	offset   int
	selected string // the VM under the cursor, kept across refreshes
}

type vmListKeys struct {
	nav                                                             navKeys
	page                                                            pageKeys // Switch: the images
	SSH, Shell, Start, Stop, ForceStop, Restart, Pause, Delete, Log key.Binding
}

func newVMList(m *Model) *vmList {
	return &vmList{m: m, keys: vmListKeys{
		nav: newNavKeys(),
		page: pageKeys{Create: bind("new", "n"), Switch: bind("images", "i", "tab"),
			Help: bind("more", "?"), Quit: bind("quit", "q")},
		SSH:       bind("ssh", "enter"),
		Shell:     bind("shell", "e"),
		Start:     bind("start", "s"),
		Stop:      bind("stop", "x"),
		ForceStop: bind("force stop", "X"),
		Restart:   bind("restart", "r"),
		Pause:     bind("pause/resume", "p"),
		Delete:    bind("delete", "d"),
		Log:       bind("log", "l"),
	}}
}

func (l *vmList) Keys() help.KeyMap {
	k, p := l.keys, l.keys.page
	return keyMap{
		short: []key.Binding{k.SSH, p.Create, k.Start, k.Stop, k.Delete, k.Log, p.Switch, p.Help, p.Quit},
		rows: [][]key.Binding{
			append(k.nav.all(), p.Switch, p.Help, p.Quit),
			{k.SSH, k.Shell, k.Log, p.Create},
			{k.Start, k.Stop, k.ForceStop, k.Restart, k.Pause, k.Delete},
		},
	}
}

func (l *vmList) Title() string {
	running := 0
	for _, v := range l.m.vms {
		if v.State == api.StateRunning {
			running++
		}
	}
	return fmt.Sprintf("VMs: %d, %d running", len(l.m.vms), running)
}

// follow keeps the cursor on the selected VM (by name) after the list
// changed, or on the same row when that VM is gone.
func (l *vmList) follow() {
	vms := l.m.vms
	idx := -1
	for i, v := range vms {
		if v.Name == l.selected {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = min(l.cursor, len(vms)-1)
	}
	l.cursor = max(idx, 0)
	l.selected = ""
	if len(vms) > 0 {
		l.selected = vms[l.cursor].Name
	}
}

// sel returns the VM under the cursor.
func (l *vmList) sel() (api.VM, bool) {
	if l.cursor < 0 || l.cursor >= len(l.m.vms) {
		return api.VM{}, false
	}
	return l.m.vms[l.cursor], true
}

func (l *vmList) Update(msg tea.Msg) tea.Cmd {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	m, k := l.m, l.keys
	if d, ok := k.nav.step(km, l.pageRows()); ok {
		if len(m.vms) > 0 {
			l.cursor = max(0, min(len(m.vms)-1, l.cursor+d))
			l.selected = m.vms[l.cursor].Name
		}
		return nil
	}
	if cmd, ok := k.page.handle(m, km, m.imageList); ok {
		return cmd
	}
	vm, ok := l.sel()
	if !ok {
		return nil
	}
	switch {
	case key.Matches(km, k.SSH):
		return m.sshCmd(vm.Name)
	case key.Matches(km, k.Shell):
		return m.shellCmd(vm.Name)
	case key.Matches(km, k.Start):
		return m.runOp(opRequest{op: opStart, name: vm.Name})
	case key.Matches(km, k.Stop):
		return m.runOp(opRequest{op: opStop, name: vm.Name})
	case key.Matches(km, k.Restart):
		return m.runOp(opRequest{op: opRestart, name: vm.Name})
	case key.Matches(km, k.Pause):
		if vm.State == api.StatePaused {
			return m.runOp(opRequest{op: opResume, name: vm.Name})
		}
		return m.runOp(opRequest{op: opPause, name: vm.Name})
	case key.Matches(km, k.ForceStop):
		return m.openOverlay(newConfirm(m, fmt.Sprintf("Force stop %s?", vm.Name),
			"The VMM is killed without a clean guest shutdown; data the guest has not written to disk is lost.",
			func() tea.Cmd { return m.runOp(opRequest{op: opForceStop, name: vm.Name}) }))
	case key.Matches(km, k.Delete):
		body := "Its disk and console log are removed. This cannot be undone."
		force := vm.State != api.StateStopped
		if force {
			body = "It is " + vm.State + " and will be killed first. " + body
		}
		return m.openOverlay(newConfirm(m, fmt.Sprintf("Delete VM %s?", vm.Name), body,
			func() tea.Cmd { return m.runOp(opRequest{op: opDelete, name: vm.Name, force: force}) }))
	case key.Matches(km, k.Log):
		return m.openConsole(vm)
	}
	return nil
}

// pageRows is how many VM rows the table shows (page up/down moves by it).
func (l *vmList) pageRows() int {
	rows := l.m.bodyHeight() - 1
	if rows >= detailLines+4 {
		rows -= detailLines
	}
	return max(1, rows)
}

// detailLines is the height of the VM detail pane, rule included.
const detailLines = 9

func (l *vmList) View(width, height int) []string {
	detail := detailLines
	if height < detail+4 {
		detail = 0 // too short: the list alone
	}
	out := l.table(width, height-detail)
	if detail > 0 {
		out = append(fit(out, height-detail), l.detail(width)...)
	}
	return out
}

func (l *vmList) columns(width int) []column {
	cols := []column{{"NAME", 16, false}, {"STATE", 9, false}, {"IP", 15, false}, {"CPU", 3, true},
		{"MEMORY", 7, true}, {"UPTIME", 7, true}, {"IMAGE", 0, false}}
	used := 2
	for _, c := range cols {
		used += c.width + 1
	}
	cols[len(cols)-1].width = max(5, width-used)
	return cols
}

func (l *vmList) table(width, height int) []string {
	m := l.m
	cols := l.columns(width)
	out := []string{headerStyle.Render("  " + strings.TrimRight(renderRow(cols, columnTitles(cols)), " "))}
	rows := max(1, height-1)
	if !m.loaded {
		return append(out, dimStyle.Render("  loading…"))
	}
	if len(m.vms) == 0 {
		return append(out, dimStyle.Render("  no VMs yet: press n to create one"))
	}
	// Scroll so the cursor stays visible.
	if l.cursor < l.offset {
		l.offset = l.cursor
	}
	if l.cursor >= l.offset+rows {
		l.offset = l.cursor - rows + 1
	}
	l.offset = max(0, min(l.offset, len(m.vms)-rows))
	now := m.opts.Now()
	for i := l.offset; i < len(m.vms) && i < l.offset+rows; i++ {
		v := m.vms[i]
		state := v.State
		if o, ok := m.pending[v.Name]; ok {
			state = m.spin.View() + opWords[o].running
		}
		ip := v.IP
		if ip == "" {
			ip = "-"
		}
		cells := []string{v.Name, state, ip, strconv.Itoa(v.CPUs), sizeCell(int64(v.MemoryMiB) << 20),
			uptime(v, now), v.Image}
		if i == l.cursor {
			out = append(out, selStyle.Render(ansi.Truncate("▸ "+renderRow(cols, cells), width, "…")))
			continue
		}
		out = append(out, "  "+renderRow(cols, cells, lipgloss.NewStyle(), stateStyle(v.State)))
	}
	if len(m.vms) > rows {
		out[0] = spread(out[0], dimStyle.Render(fmt.Sprintf("%d-%d of %d", l.offset+1, min(len(m.vms), l.offset+rows), len(m.vms))), width)
	}
	return out
}

func (l *vmList) detail(width int) []string {
	v, ok := l.sel()
	rule := func(title string) string {
		t := "── " + title + " "
		return dimStyle.Render(t + strings.Repeat("─", max(0, width-ansi.StringWidth(t))))
	}
	if !ok {
		return []string{rule("no VM selected")}
	}
	or := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	state := v.State
	if v.DesiredState != "" && v.DesiredState != v.State {
		state += " (wants " + v.DesiredState + ")"
	}
	vmm := v.VMM
	if v.Accel != "" {
		vmm += " (" + v.Accel + ")"
	}
	cid, pid := "-", "-"
	if v.VsockCID != 0 {
		cid = strconv.FormatUint(uint64(v.VsockCID), 10)
	}
	if v.PID != 0 {
		pid = strconv.Itoa(v.PID)
	}
	half := width / 2
	pair := func(l1, v1, l2, v2 string) string {
		left := labelStyle.Render(fmt.Sprintf(" %-8s", l1)) + v1
		left = ansi.Truncate(left, half-1, "…")
		left += strings.Repeat(" ", max(1, half-ansi.StringWidth(left)))
		return left + labelStyle.Render(fmt.Sprintf("%-8s", l2)) + v2
	}
	one := func(l, val string) string { return labelStyle.Render(fmt.Sprintf(" %-8s", l)) + val }
	lastErr := "-"
	if v.LastError != "" {
		lastErr = errStyle.Render(errText(fmt.Errorf("%s", v.LastError)))
	}
	return []string{
		rule(v.Name),
		pair("State", stateStyle(v.State).Render(state), "IP", or(v.IP)),
		pair("CPUs", strconv.Itoa(v.CPUs), "Memory", sizeCell(int64(v.MemoryMiB)<<20)),
		pair("Disk", sizeCell(v.DiskBytes), "Image", or(v.Image)),
		pair("VMM", or(vmm), "PID", pid),
		pair("Uptime", uptime(v, l.m.opts.Now()), "CID", cid),
		one("Agent", or(v.AgentSocket)),
		one("Console", or(v.ConsoleLog)),
		one("Error", lastErr),
	}
}
