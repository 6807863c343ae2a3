package tui

import (
	"fmt"
	"strings"

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
		api.StateCreating: warnStyle, api.StatePaused: warnStyle,
	}
)

// View implements tea.Model: the title line, the component in front (an
// overlay replaces the page's body), the status line and the help line of
// the component in front. It always renders exactly height lines of at
// most width columns, so redraws replace the screen line for line.
func (m *Model) View() string {
	if m.quit {
		return ""
	}
	lines := []string{m.titleLine()}
	body := m.bodyHeight()
	var b []string
	if m.overlay != nil {
		b = m.overlay.View(m.width, body)
	} else {
		b = m.pageView(body)
	}
	lines = append(lines, fit(b, body)...)
	lines = append(lines, m.statusLines()...)
	lines = append(lines, helpText(m.help, m.front().Keys(), m.width))
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, m.width, "…")
	}
	return strings.Join(lines, "\n")
}

// bodyHeight is the screen minus the title, status and help lines.
func (m *Model) bodyHeight() int { return max(1, m.height-2-len(m.statusLines())) }

// pageView is the page, below a notice while the daemon is unreachable
// (the lists then show what was last fetched).
func (m *Model) pageView(body int) []string {
	var out []string
	if _, isConsole := m.page.(*console); m.connErr != nil && !isConsole {
		msg := fmt.Sprintf("Lost connection to bangerd: %s. Retrying every %s (attempt %d); the list below may be stale.",
			errText(m.connErr), m.opts.PollInterval, m.attempts)
		for _, l := range strings.Split(lipgloss.NewStyle().Width(m.width).Render(msg), "\n") {
			out = append(out, errStyle.Render(strings.TrimRight(l, " ")))
		}
		if len(out) > body/2 {
			out = out[:max(1, body/2)]
		}
	}
	return append(out, m.page.View(m.width, body-len(out))...)
}

func (m *Model) titleLine() string {
	right := okStyle.Render("● bangerd")
	if m.connErr != nil {
		right = errStyle.Render("✗ bangerd unreachable")
	}
	return spread(titleStyle.Render("banger")+"  "+m.page.Title(), right, m.width)
}

// spread puts left and right at the two ends of a width-wide line.
func spread(left, right string, width int) string {
	gap := width - lipgloss.Width(left) - lipgloss.Width(right)
	if gap < 1 {
		return left
	}
	return left + strings.Repeat(" ", gap) + right
}

type column struct {
	title string
	width int
	right bool
}

func columnTitles(cols []column) []string {
	titles := make([]string, len(cols))
	for i, c := range cols {
		titles[i] = c.title
	}
	return titles
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

func stateStyle(s string) lipgloss.Style {
	if st, ok := stateStyleFor[s]; ok {
		return st
	}
	return lipgloss.NewStyle()
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
	for name, o := range m.pending {
		op := opWords[o].running + " " + name
		if p, ok := m.phases[name]; ok {
			op += ": " + phaseText(p)
		}
		ops = append(ops, op)
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
