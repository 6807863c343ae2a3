package tui

import (
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// keyLabels are how help shows keys whose names are words.
var keyLabels = map[string]string{"up": "↑", "down": "↓", "left": "←", "right": "→", "pgdown": "pgdn", " ": "space"}

// bind makes a binding whose help shows every one of its keys, so that a
// key can never work without the help saying so.
func bind(desc string, keys ...string) key.Binding {
	labels := make([]string, len(keys))
	for i, k := range keys {
		labels[i] = k
		if l, ok := keyLabels[k]; ok {
			labels[i] = l
		}
	}
	return key.NewBinding(key.WithKeys(keys...), key.WithHelp(strings.Join(labels, "/"), desc))
}

// rootKeys are handled by the root model whatever is in front.
type rootKeys struct{ QuitNow key.Binding }

var rootKeyMap = rootKeys{QuitNow: bind("quit, twice: at once", "ctrl+c")}

// keyMap is a help.KeyMap made of rows of bindings: the first row is the
// short help line, all rows together the full help.
type keyMap struct {
	short []key.Binding
	rows  [][]key.Binding
}

func (k keyMap) ShortHelp() []key.Binding  { return k.short }
func (k keyMap) FullHelp() [][]key.Binding { return k.rows }

// withRoot adds the root keys to a component's full help.
func withRoot(k help.KeyMap) help.KeyMap {
	return keyMap{short: k.ShortHelp(), rows: append(append([][]key.Binding{}, k.FullHelp()...), []key.Binding{rootKeyMap.QuitNow})}
}

// navKeys move a cursor through a list.
type navKeys struct {
	Up, Down, PageUp, PageDown, Top, Bottom key.Binding
}

func newNavKeys() navKeys {
	return navKeys{
		Up:       bind("up", "up", "k"),
		Down:     bind("down", "down", "j"),
		PageUp:   bind("page up", "pgup"),
		PageDown: bind("page down", "pgdown"),
		Top:      bind("first", "home", "g"),
		Bottom:   bind("last", "end", "G"),
	}
}

func (n navKeys) all() []key.Binding {
	return []key.Binding{n.Up, n.Down, n.PageUp, n.PageDown, n.Top, n.Bottom}
}

// step returns how far msg moves a cursor in a list whose page holds
// pageRows rows, and whether msg is a navigation key at all.
func (n navKeys) step(msg tea.KeyMsg, pageRows int) (int, bool) {
	switch {
	case key.Matches(msg, n.Up):
		return -1, true
	case key.Matches(msg, n.Down):
		return 1, true
	case key.Matches(msg, n.PageUp):
		return -max(1, pageRows-1), true
	case key.Matches(msg, n.PageDown):
		return max(1, pageRows-1), true
	case key.Matches(msg, n.Top):
		return -1 << 30, true
	case key.Matches(msg, n.Bottom):
		return 1 << 30, true
	}
	return 0, false
}

// pageKeys are the keys both list pages have: a new VM, the other page,
// help and quit.
type pageKeys struct{ Create, Switch, Help, Quit key.Binding }

// handle acts on msg when it is one of k's keys (Switch shows other) and
// reports whether it was.
func (k pageKeys) handle(m *Model, msg tea.KeyMsg, other component) (tea.Cmd, bool) {
	switch {
	case key.Matches(msg, k.Quit):
		return m.quitCmd(false), true
	case key.Matches(msg, k.Help):
		return m.openHelp(), true
	case key.Matches(msg, k.Switch):
		m.showPage(other)
		return nil, true
	case key.Matches(msg, k.Create):
		return m.openOverlay(newCreateForm(m)), true
	}
	return nil, false
}
