package tui

import "github.com/charmbracelet/bubbles/key"

// keyMap is every binding of the list views; it feeds the help line.
type keyMap struct {
	Up, Down, SSH, Create, Start, Stop, ForceStop, Restart, Delete, Log, Images, Help, Quit key.Binding
}

func newKeyMap() keyMap {
	return keyMap{
		Up:        key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:      key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		SSH:       key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "ssh")),
		Create:    key.NewBinding(key.WithKeys("n"), key.WithHelp("n", "new")),
		Start:     key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "start")),
		Stop:      key.NewBinding(key.WithKeys("x"), key.WithHelp("x", "stop")),
		ForceStop: key.NewBinding(key.WithKeys("X"), key.WithHelp("X", "force stop")),
		Restart:   key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "restart")),
		Delete:    key.NewBinding(key.WithKeys("d"), key.WithHelp("d", "delete")),
		Log:       key.NewBinding(key.WithKeys("l"), key.WithHelp("l", "log")),
		Images:    key.NewBinding(key.WithKeys("i", "tab"), key.WithHelp("i", "images")),
		Help:      key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "more")),
		Quit:      key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

// ShortHelp is the one-line help; it fits 80 columns.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.SSH, k.Create, k.Start, k.Stop, k.Delete, k.Log, k.Images, k.Help, k.Quit}
}

// FullHelp is shown by "?".
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Images, k.Help, k.Quit},
		{k.SSH, k.Log, k.Create},
		{k.Start, k.Stop, k.ForceStop, k.Restart, k.Delete},
	}
}

// simpleHelp is a fixed help line for the dialogs and the console view.
type simpleHelp []key.Binding

func (s simpleHelp) ShortHelp() []key.Binding  { return s }
func (s simpleHelp) FullHelp() [][]key.Binding { return [][]key.Binding{s} }

func hb(keys, desc string) key.Binding {
	return key.NewBinding(key.WithKeys(keys), key.WithHelp(keys, desc))
}

var (
	formHelp    = simpleHelp{hb("tab/↓", "next"), hb("shift+tab/↑", "previous"), hb("enter", "create"), hb("esc", "cancel")}
	confirmHelp = simpleHelp{hb("y", "yes"), hb("n/esc", "no")}
	consoleHelp = simpleHelp{hb("↑/↓/pgup/pgdn", "scroll"), hb("g/G", "top/bottom (follow)"), hb("esc", "back"), hb("q", "quit")}
)
