package tui

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/bangerhq/banger/internal/api"
)

var (
	titleStyle    = lipgloss.NewStyle().Bold(true)
	dimStyle      = lipgloss.NewStyle().Foreground(lipgloss.Color("8"))
	headerStyle   = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12"))
	selStyle      = lipgloss.NewStyle().Reverse(true)
	errStyle      = lipgloss.NewStyle().Foreground(lipgloss.Color("9"))
	okStyle       = lipgloss.NewStyle().Foreground(lipgloss.Color("10"))
	warnStyle     = lipgloss.NewStyle().Foreground(lipgloss.Color("11"))
	labelStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("12"))
	dialogStyle   = lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).Padding(0, 1)
	stateStyleFor = map[string]lipgloss.Style{
		api.StateRunning: okStyle, api.StateStopped: dimStyle, api.StateBroken: errStyle,
		api.StateUnknown: errStyle, api.StateStarting: warnStyle, api.StateStopping: warnStyle,
		api.StateCreating: warnStyle,
	}
)

// detailLines is the height of the VM detail pane, rule included.
const detailLines = 9

// View implements tea.Model. It always renders exactly height lines of at
// most width columns, so redraws replace the screen line for line.
func (m *Model) View() string {
	if m.quit {
		return ""
	}
	lines := []string{m.titleLine()}
	body := m.bodyHeight()
	var b []string
	switch {
	case m.overlay == overlayForm && m.form != nil:
		b = center(m.formView(), m.width, body)
	case m.overlay == overlayConfirm && m.confirm != nil:
		b = center(m.confirmView(), m.width, body)
	case m.overlay == overlayHelp:
		b = center(m.help.FullHelpView(m.keys.FullHelp()), m.width, body)
	case m.mode == modeConsole && m.console != nil:
		b = m.consoleView(body)
	default:
		b = m.mainView(body)
	}
	lines = append(lines, fit(b, body)...)
	lines = append(lines, m.statusLines()...)
	lines = append(lines, m.helpLine())
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, m.width, "…")
	}
	return strings.Join(lines, "\n")
}

// bodyHeight is the screen minus the title, status and help lines.
func (m *Model) bodyHeight() int { return max(1, m.height-2-len(m.statusLines())) }

func (m *Model) titleLine() string {
	running := 0
	for _, v := range m.vms {
		if v.State == api.StateRunning {
			running++
		}
	}
	left := titleStyle.Render("banger")
	switch m.mode {
	case modeImages:
		left += fmt.Sprintf("  images: %d", len(m.images))
	case modeConsole:
		left += "  console: " + m.console.name
	default:
		left += fmt.Sprintf("  VMs: %d, %d running", len(m.vms), running)
	}
	right := okStyle.Render("● bangerd")
	if m.connErr != nil {
		right = errStyle.Render("✗ bangerd unreachable")
	}
	return spread(left, right, m.width)
}

// spread puts left and right at the two ends of a width-wide line.
func spread(left, right string, width int) string {
	gap := width - lipgloss.Width(left) - lipgloss.Width(right)
	if gap < 1 {
		return left
	}
	return left + strings.Repeat(" ", gap) + right
}

func (m *Model) mainView(body int) []string {
	var out []string
	if m.connErr != nil {
		msg := fmt.Sprintf("Lost connection to bangerd: %s. Retrying every %s (attempt %d); the list below may be stale.",
			errText(m.connErr), m.opts.PollInterval, m.attempts)
		for _, l := range strings.Split(lipgloss.NewStyle().Width(m.width).Render(msg), "\n") {
			out = append(out, errStyle.Render(strings.TrimRight(l, " ")))
		}
		if len(out) > body/2 {
			out = out[:max(1, body/2)]
		}
	}
	rest := body - len(out)
	if m.mode == modeImages {
		return append(out, m.imagesView(rest)...)
	}
	detail := detailLines
	if rest < detail+4 {
		detail = 0 // too short: the list alone
	}
	out = append(out, m.vmTable(rest-detail)...)
	if detail > 0 {
		out = append(fit(out, body-detail), m.detailView()...)
	}
	return out
}

// listRows is how many VM rows the table shows.
func (m *Model) listRows() int {
	rows := m.bodyHeight() - 1
	if rows >= detailLines+4 {
		rows -= detailLines
	}
	return max(1, rows)
}

type column struct {
	title string
	width int
	right bool
}

func (m *Model) vmColumns() []column {
	cols := []column{{"NAME", 16, false}, {"STATE", 9, false}, {"IP", 15, false}, {"CPU", 3, true},
		{"MEMORY", 7, true}, {"UPTIME", 7, true}, {"IMAGE", 0, false}}
	used := 2
	for _, c := range cols {
		used += c.width + 1
	}
	cols[len(cols)-1].width = max(5, m.width-used)
	return cols
}

// renderRow lays cells out in cols; styles, when given, style one cell each
// (after padding, so columns stay aligned).
func renderRow(cols []column, cells []string, styles ...lipgloss.Style) string {
	var b strings.Builder
	for i, c := range cols {
		s := ansi.Truncate(cells[i], c.width, "…")
		pad := strings.Repeat(" ", max(0, c.width-ansi.StringWidth(s)))
		if c.right {
			s = pad + s
		} else {
			s += pad
		}
		if i < len(styles) {
			s = styles[i].Render(s)
		}
		b.WriteString(s)
		if i < len(cols)-1 {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func (m *Model) vmTable(height int) []string {
	cols := m.vmColumns()
	titles := make([]string, len(cols))
	for i, c := range cols {
		titles[i] = c.title
	}
	out := []string{headerStyle.Render("  " + strings.TrimRight(renderRow(cols, titles), " "))}
	rows := max(1, height-1)
	if !m.loaded {
		return append(out, dimStyle.Render("  loading…"))
	}
	if len(m.vms) == 0 {
		return append(out, dimStyle.Render("  no VMs yet: press n to create one"))
	}
	// Scroll so the cursor stays visible.
	if m.cursor < m.offset {
		m.offset = m.cursor
	}
	if m.cursor >= m.offset+rows {
		m.offset = m.cursor - rows + 1
	}
	m.offset = max(0, min(m.offset, len(m.vms)-rows))
	now := m.opts.Now()
	for i := m.offset; i < len(m.vms) && i < m.offset+rows; i++ {
		v := m.vms[i]
		state := v.State
		if op, ok := m.pending[v.Name]; ok {
			state = m.spin.View() + op
		}
		ip := v.IP
		if ip == "" {
			ip = "-"
		}
		cells := []string{v.Name, state, ip, strconv.Itoa(v.CPUs), sizeCell(int64(v.MemoryMiB) << 20),
			uptime(v, now), v.Image}
		if i == m.cursor {
			out = append(out, selStyle.Render(ansi.Truncate("▸ "+renderRow(cols, cells), m.width, "…")))
			continue
		}
		out = append(out, "  "+renderRow(cols, cells, lipgloss.NewStyle(), stateStyle(v.State)))
	}
	if len(m.vms) > rows {
		out[0] = spread(out[0], dimStyle.Render(fmt.Sprintf("%d-%d of %d", m.offset+1, min(len(m.vms), m.offset+rows), len(m.vms))), m.width)
	}
	return out
}

func (m *Model) detailView() []string {
	v, ok := m.sel()
	rule := func(title string) string {
		t := "── " + title + " "
		return dimStyle.Render(t + strings.Repeat("─", max(0, m.width-ansi.StringWidth(t))))
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
	half := m.width / 2
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
		pair("Uptime", uptime(v, m.opts.Now()), "CID", cid),
		one("Agent", or(v.AgentSocket)),
		one("Console", or(v.ConsoleLog)),
		one("Error", lastErr),
	}
}

func stateStyle(s string) lipgloss.Style {
	if st, ok := stateStyleFor[s]; ok {
		return st
	}
	return lipgloss.NewStyle()
}

func (m *Model) imagesView(height int) []string {
	cols := []column{{"NAME", 20, false}, {"SOURCE", 22, false}, {"SIZE", 9, true}, {"KERNEL", 10, false}, {"USED BY", 0, false}}
	used := 2
	for _, c := range cols {
		used += c.width + 1
	}
	cols[len(cols)-1].width = max(5, m.width-used)
	titles := make([]string, len(cols))
	for i, c := range cols {
		titles[i] = c.title
	}
	out := []string{headerStyle.Render("  " + strings.TrimRight(renderRow(cols, titles), " "))}
	if len(m.images) == 0 {
		return append(out, dimStyle.Render("  no images: build one with `banger image build`"))
	}
	rows := max(1, height-3)
	start := max(0, m.imgCursor-rows+1)
	for i := start; i < len(m.images) && i < start+rows; i++ {
		im := m.images[i]
		used := strings.Join(im.UsedBy, ", ")
		if used == "" {
			used = "-"
		}
		line := renderRow(cols, []string{im.Name, im.Source, sizeCell(im.SizeBytes), im.KernelRelease, used})
		if i == m.imgCursor {
			out = append(out, selStyle.Render("▸ "+line))
		} else {
			out = append(out, "  "+line)
		}
	}
	if m.imgCursor < len(m.images) {
		out = fit(out, height-1)
		out = append(out, labelStyle.Render(" Path    ")+m.images[m.imgCursor].Path)
	}
	return out
}

func (m *Model) consoleView(body int) []string {
	c := m.console
	head := dimStyle.Render(c.path)
	switch {
	case c.missing:
		return []string{head, dimStyle.Render("no console output yet (the file appears when the VM first boots)")}
	case c.err != "":
		return []string{head, errStyle.Render(c.err)}
	}
	pos := "following"
	if !c.vp.AtBottom() {
		pos = fmt.Sprintf("%d%% (G to follow)", int(c.vp.ScrollPercent()*100))
	}
	c.vp.Width, c.vp.Height = m.width, max(1, body-1)
	return append([]string{spread(head, dimStyle.Render(pos), m.width)}, strings.Split(c.vp.View(), "\n")...)
}

func (m *Model) formView() string {
	f := m.form
	var b strings.Builder
	b.WriteString(titleStyle.Render("New VM") + "\n\n")
	for i, in := range f.inputs {
		marker := "  "
		if i == f.focus {
			marker = "▸ "
		}
		b.WriteString(marker + labelStyle.Render(fmt.Sprintf("%-11s", fieldLabels[i])) + " " + in.View() + "\n")
	}
	imgs := "none (build one with `banger image build`)"
	if len(f.images) > 0 {
		imgs = strings.Join(f.images, ", ")
	}
	b.WriteString("\n" + dimStyle.Render(ansi.Truncate("images: "+imgs, 56, "…")))
	b.WriteString("\n" + dimStyle.Render("empty fields take the daemon's defaults"))
	if f.err != "" {
		b.WriteString("\n\n" + errStyle.Width(56).Render(f.err))
	}
	return dialogStyle.Width(min(62, m.width-2)).Render(b.String())
}

func (m *Model) confirmView() string {
	c := m.confirm
	w := min(60, m.width-2)
	text := titleStyle.Render(c.title) + "\n\n" + lipgloss.NewStyle().Width(w-4).Render(c.body) +
		"\n\n" + "y: yes   n/esc: no"
	return dialogStyle.Width(w).Render(text)
}

// statusLines is the status bar: the running operations, else the last
// result, wrapped to at most maxStatusLines so the daemon's whole message
// shows.
func (m *Model) statusLines() []string {
	text := m.statusText()
	if ansi.StringWidth(text) <= m.width {
		return []string{text}
	}
	lines := strings.Split(lipgloss.NewStyle().Width(m.width).Render(text), "\n")
	if len(lines) > maxStatusLines {
		lines = lines[:maxStatusLines]
		lines[maxStatusLines-1] = ansi.Truncate(lines[maxStatusLines-1]+" …", m.width, "…")
	}
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return lines
}

// maxStatusLines bounds the status bar; it shrinks the body when it grows.
const maxStatusLines = 3

func (m *Model) statusText() string {
	var ops []string
	for name, op := range m.pending {
		ops = append(ops, op+" "+name)
	}
	if m.sshBusy != "" {
		ops = append(ops, "ssh "+m.sshBusy)
	}
	if len(ops) > 0 {
		sortStrings(ops)
		s := m.spin.View() + strings.Join(ops, ", ") + "…"
		if m.status != "" {
			s += dimStyle.Render("  | " + m.status)
		}
		return warnStyle.Render(s)
	}
	if m.statusErr {
		return errStyle.Render("✗ " + m.status)
	}
	return m.status
}

func (m *Model) helpLine() string {
	h := m.help
	h.Width = m.width
	h.ShortSeparator = "  "
	var k help.KeyMap = m.keys
	switch {
	case m.overlay == overlayForm:
		k = formHelp
	case m.overlay == overlayConfirm:
		k = confirmHelp
	case m.overlay == overlayHelp:
		k = simpleHelp{hb("any key", "close")}
	case m.mode == modeConsole:
		k = consoleHelp
	case m.mode == modeImages:
		k = simpleHelp{hb("↑/↓", "move"), hb("n", "new vm"), hb("i/esc", "vms"), hb("q", "quit")}
	}
	return h.ShortHelpView(k.ShortHelp())
}

// center places block in the middle of a width x height area.
func center(block string, width, height int) []string {
	return strings.Split(lipgloss.Place(width, height, lipgloss.Center, lipgloss.Center, block), "\n")
}

// fit pads or cuts lines to exactly n.
func fit(lines []string, n int) []string {
	if len(lines) > n {
		return lines[:max(0, n)]
	}
	for len(lines) < n {
		lines = append(lines, "")
	}
	return lines
}
