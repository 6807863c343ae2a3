package tui

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/bangerhq/banger/internal/api"
)

// maxConsole is how much of a console log the view keeps (its tail).
const maxConsole = 1 << 20

// console is the page that shows one VM's console log: a viewport that
// follows the file while it is scrolled to the bottom.
type console struct {
	m          *Model
	keys       consoleKeys
	name, path string
	vp         viewport.Model
	buf        []byte
	offset     int64
	missing    bool
	err        string
	gen        int
}

type consoleKeys struct {
	Up, Down, PageUp, PageDown, HalfUp, HalfDown, Top, Bottom, Back, Quit key.Binding
}

type (
	consoleMsg struct {
		path   string
		data   []byte
		offset int64
		reset  bool
		err    error
	}
	consoleTickMsg struct{ gen int }
)

func newConsoleKeys() consoleKeys {
	return consoleKeys{
		Up:       bind("scroll up", "up", "k"),
		Down:     bind("scroll down", "down", "j"),
		PageUp:   bind("page up", "pgup", "b"),
		PageDown: bind("page down", "pgdown", "f", " "),
		HalfUp:   bind("half page up", "u", "ctrl+u"),
		HalfDown: bind("half page down", "d", "ctrl+d"),
		Top:      bind("top", "g", "home"),
		Bottom:   bind("bottom (follow)", "G", "end"),
		Back:     bind("back", "esc", "l"),
		Quit:     bind("quit", "q"),
	}
}

// openConsole shows vm's console log.
func (m *Model) openConsole(vm api.VM) tea.Cmd {
	if vm.ConsoleLog == "" {
		m.setStatus("vm "+vm.Name+" has no console log path", true)
		return nil
	}
	m.consoleGen++
	c := &console{m: m, keys: newConsoleKeys(), name: vm.Name, path: vm.ConsoleLog, gen: m.consoleGen}
	c.vp = viewport.New(m.width, max(1, m.bodyHeight()-1))
	// The viewport scrolls with the console's own bindings, which the help
	// lists; it has no horizontal scrolling.
	c.vp.KeyMap = viewport.KeyMap{
		Up: c.keys.Up, Down: c.keys.Down, PageUp: c.keys.PageUp, PageDown: c.keys.PageDown,
		HalfPageUp: c.keys.HalfUp, HalfPageDown: c.keys.HalfDown,
		Left: key.NewBinding(key.WithDisabled()), Right: key.NewBinding(key.WithDisabled()),
	}
	m.showPage(c)
	return c.readCmd()
}

func (c *console) Keys() help.KeyMap {
	k := c.keys
	return keyMap{
		short: []key.Binding{k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom, k.Back, k.Quit},
		rows:  [][]key.Binding{{k.Up, k.Down, k.PageUp, k.PageDown, k.HalfUp, k.HalfDown}, {k.Top, k.Bottom, k.Back, k.Quit}},
	}
}

func (c *console) Title() string { return "console: " + c.name }

// readCmd reads what was appended to the log since the last read; a file
// that shrank (a new boot truncated it) is read again from the start.
func (c *console) readCmd() tea.Cmd {
	path, offset := c.path, c.offset
	return func() tea.Msg { return readConsole(path, offset) }
}

func readConsole(path string, offset int64) consoleMsg {
	f, err := os.Open(path)
	if err != nil {
		return consoleMsg{path: path, err: err}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return consoleMsg{path: path, err: fmt.Errorf("stat console log: %w", err)}
	}
	size := st.Size()
	reset := false
	if size < offset || offset == 0 {
		offset, reset = 0, true
		if size > maxConsole {
			offset = size - maxConsole
		}
	}
	if size == offset {
		return consoleMsg{path: path, offset: offset, reset: reset}
	}
	data := make([]byte, size-offset)
	n, err := f.ReadAt(data, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return consoleMsg{path: path, err: fmt.Errorf("read console log: %w", err)}
	}
	return consoleMsg{path: path, data: data[:n], offset: offset + int64(n), reset: reset}
}

func (c *console) Update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case consoleMsg:
		return c.onRead(msg)
	case consoleTickMsg:
		if msg.gen != c.gen {
			return nil
		}
		return c.readCmd()
	case tea.KeyMsg:
		k := c.keys
		switch {
		case key.Matches(msg, k.Back):
			c.m.showPage(c.m.vmList)
			return nil
		case key.Matches(msg, k.Quit):
			return c.m.quitCmd(false)
		case key.Matches(msg, k.Top):
			c.vp.GotoTop()
			return nil
		case key.Matches(msg, k.Bottom):
			c.vp.GotoBottom()
			return nil
		}
		var cmd tea.Cmd
		c.vp, cmd = c.vp.Update(msg)
		return cmd
	}
	return nil
}

func (c *console) onRead(msg consoleMsg) tea.Cmd {
	if msg.path != c.path {
		return nil
	}
	gen := c.gen
	next := tea.Tick(c.m.opts.ConsoleInterval, func(time.Time) tea.Msg { return consoleTickMsg{gen: gen} })
	c.missing, c.err = false, ""
	switch {
	case errors.Is(msg.err, fs.ErrNotExist):
		c.missing = true
		return next
	case msg.err != nil:
		c.err = errText(msg.err)
		return next
	}
	if len(msg.data) == 0 && !msg.reset {
		return next
	}
	follow := c.vp.AtBottom() || c.offset == 0
	if msg.reset {
		c.buf = nil
	}
	c.buf = append(c.buf, msg.data...)
	if len(c.buf) > maxConsole {
		c.buf = c.buf[len(c.buf)-maxConsole:]
	}
	c.offset = msg.offset
	c.vp.SetContent(cleanConsole(c.buf))
	if follow {
		c.vp.GotoBottom()
	}
	return next
}

// cleanConsole makes guest console output safe to draw: no escape
// sequences, no carriage returns, tabs expanded.
func cleanConsole(b []byte) string {
	s := ansi.Strip(string(b))
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "")
	s = strings.ReplaceAll(s, "\t", "    ")
	return strings.TrimRight(s, "\n")
}

func (c *console) View(width, height int) []string {
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
	c.vp.Width, c.vp.Height = width, max(1, height-1)
	return append([]string{spread(head, dimStyle.Render(pos), width)}, strings.Split(c.vp.View(), "\n")...)
}
