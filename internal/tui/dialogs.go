package tui

import (
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// confirm is a yes/no question guarding a destructive action.
type confirm struct {
	m           *Model
	keys        confirmKeys
	title, body string
	yes         func() tea.Cmd
}

type confirmKeys struct{ Yes, No key.Binding }

func newConfirm(m *Model, title, body string, yes func() tea.Cmd) *confirm {
	return &confirm{m: m, title: title, body: body, yes: yes, keys: confirmKeys{
		Yes: bind("yes", "y", "Y"),
		No:  bind("no", "n", "N", "esc", "q", "enter"),
	}}
}

func (c *confirm) Keys() help.KeyMap {
	return keyMap{short: []key.Binding{c.keys.Yes, c.keys.No}, rows: [][]key.Binding{{c.keys.Yes, c.keys.No}}}
}

func (c *confirm) Title() string { return "confirm" }

func (c *confirm) Update(msg tea.Msg) tea.Cmd {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	switch {
	case key.Matches(km, c.keys.Yes):
		c.m.closeOverlay()
		return c.yes()
	case key.Matches(km, c.keys.No):
		c.m.closeOverlay()
		c.m.setStatus("cancelled", false)
	}
	return nil
}

func (c *confirm) View(width, height int) []string {
	w := min(60, width-2)
	text := titleStyle.Render(c.title) + "\n\n" + lipgloss.NewStyle().Width(w-4).Render(c.body) +
		"\n\n" + helpText(c.m.help, c.Keys(), w)
	return center(dialogStyle.Width(w).Render(text), width, height)
}

// helpView shows every key of the component it was opened from (and the
// root's); any key closes it, q quits.
type helpView struct {
	m    *Model
	keys help.KeyMap
	// back is the overlay it was opened over (nil over a page).
	back component
	Quit key.Binding
	Any  key.Binding
}

func newHelpView(m *Model, keys help.KeyMap, back component) *helpView {
	return &helpView{m: m, keys: withRoot(keys), back: back, Quit: bind("quit", "q"), Any: bind("close", "any other key")}
}

func (h *helpView) Keys() help.KeyMap {
	return keyMap{short: []key.Binding{h.Any, h.Quit}, rows: [][]key.Binding{{h.Any, h.Quit}}}
}

func (h *helpView) Title() string { return "keys" }

func (h *helpView) Update(msg tea.Msg) tea.Cmd {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	h.m.overlay = h.back
	if h.back == nil && key.Matches(km, h.Quit) {
		return h.m.quitCmd(false)
	}
	return nil
}

func (h *helpView) View(width, height int) []string {
	return center(h.m.help.FullHelpView(h.keys.FullHelp()), width, height)
}

// helpText is keys' short help on one line of at most width columns.
func helpText(h help.Model, keys help.KeyMap, width int) string {
	h.Width = width
	return strings.TrimRight(h.ShortHelpView(keys.ShortHelp()), " ")
}
