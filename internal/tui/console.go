package tui

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/bangerhq/banger/internal/api"
)

// maxConsole is how much of a console log the view keeps (its tail).
const maxConsole = 1 << 20

// consoleState is the console log view of one VM: a viewport that follows
// the file while it is scrolled to the bottom.
type consoleState struct {
	name, path string
	vp         viewport.Model
	buf        []byte
	offset     int64
	missing    bool
	err        string
	gen        int
	interval   time.Duration
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

func (m *Model) openConsole(vm api.VM) tea.Cmd {
	if vm.ConsoleLog == "" {
		m.setStatus("vm "+vm.Name+" has no console log path", true)
		return nil
	}
	m.consoleGen++
	c := &consoleState{name: vm.Name, path: vm.ConsoleLog, gen: m.consoleGen, interval: m.opts.ConsoleInterval}
	c.vp = viewport.New(m.width, max(1, m.bodyHeight()-1))
	m.console = c
	m.mode = modeConsole
	return c.readCmd()
}

func (c *consoleState) resize(w, h int) {
	c.vp.Width, c.vp.Height = w, max(1, h)
}

// readCmd reads what was appended to the log since the last read; a file
// that shrank (a new boot truncated it) is read again from the start.
func (c *consoleState) readCmd() tea.Cmd {
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

func (m *Model) onConsole(msg consoleMsg) tea.Cmd {
	c := m.console
	if c == nil || msg.path != c.path {
		return nil
	}
	gen := c.gen
	next := tea.Tick(c.interval, func(time.Time) tea.Msg { return consoleTickMsg{gen: gen} })
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

func (m *Model) consoleKey(msg tea.KeyMsg) tea.Cmd {
	c := m.console
	switch msg.String() {
	case "esc", "l":
		m.console, m.mode = nil, modeVMs
		return nil
	case "q":
		return m.quitCmd(false)
	case "g", "home":
		c.vp.GotoTop()
		return nil
	case "G", "end":
		c.vp.GotoBottom()
		return nil
	}
	var cmd tea.Cmd
	c.vp, cmd = c.vp.Update(msg)
	return cmd
}
