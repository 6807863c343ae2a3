package tui

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/bangerhq/banger/internal/api"
)

const (
	fieldName = iota
	fieldImage
	fieldCPUs
	fieldMemory
	fieldDisk
	numFields
)

var fieldLabels = [numFields]string{"Name", "Image", "CPUs", "Memory MiB", "Disk"}

// createForm is the "new VM" overlay. Checks that need the host (name
// rules, image existence, CPU and memory limits) are the daemon's: its
// message is shown in the form.
type createForm struct {
	m      *Model
	keys   formKeys
	inputs [numFields]textinput.Model
	focus  int
	err    string
	images []string
}

type formKeys struct {
	Next, Prev, Submit, Cancel, Help key.Binding
	// edit are the text fields' own editing keys.
	edit textinput.KeyMap
}

func newFormKeys() formKeys {
	off := key.NewBinding(key.WithDisabled())
	return formKeys{
		Next:   bind("next", "tab", "down"),
		Prev:   bind("previous", "shift+tab", "up"),
		Submit: bind("create", "enter"),
		Cancel: bind("cancel", "esc"),
		Help:   bind("all keys", "f1"),
		edit: textinput.KeyMap{
			CharacterForward:        bind("right", "right", "ctrl+f"),
			CharacterBackward:       bind("left", "left", "ctrl+b"),
			WordForward:             bind("word right", "alt+right", "ctrl+right", "alt+f"),
			WordBackward:            bind("word left", "alt+left", "ctrl+left", "alt+b"),
			LineStart:               bind("line start", "home", "ctrl+a"),
			LineEnd:                 bind("line end", "end", "ctrl+e"),
			DeleteCharacterBackward: bind("delete left", "backspace", "ctrl+h"),
			DeleteCharacterForward:  bind("delete right", "delete", "ctrl+d"),
			DeleteWordBackward:      bind("delete word left", "alt+backspace", "ctrl+w"),
			DeleteWordForward:       bind("delete word right", "alt+delete", "alt+d"),
			DeleteBeforeCursor:      bind("delete to line start", "ctrl+u"),
			DeleteAfterCursor:       bind("delete to line end", "ctrl+k"),
			Paste:                   bind("paste", "ctrl+v"),
			// No suggestions: tab, up and down move between fields.
			AcceptSuggestion: off, NextSuggestion: off, PrevSuggestion: off,
		},
	}
}

func newCreateForm(m *Model) *createForm {
	f := &createForm{m: m, keys: newFormKeys()}
	placeholders := [numFields]string{"random", "default", "2", "1024", "4G"}
	limits := [numFields]int{63, 64, 4, 7, 8}
	for i := range f.inputs {
		in := textinput.New()
		in.Prompt = ""
		in.Placeholder = placeholders[i]
		in.CharLimit = limits[i]
		in.Width = 32
		in.KeyMap = f.keys.edit
		f.inputs[i] = in
	}
	for _, im := range m.images {
		f.images = append(f.images, im.Name)
	}
	return f
}

// formFrom reopens the form with the values of a failed create.
func formFrom(m *Model, p api.VMCreateParams, errMsg string) *createForm {
	f := newCreateForm(m)
	f.inputs[fieldName].SetValue(p.Name)
	f.inputs[fieldImage].SetValue(p.Image)
	if p.CPUs > 0 {
		f.inputs[fieldCPUs].SetValue(strconv.Itoa(p.CPUs))
	}
	if p.MemoryMiB > 0 {
		f.inputs[fieldMemory].SetValue(strconv.Itoa(p.MemoryMiB))
	}
	if p.DiskBytes > 0 {
		f.inputs[fieldDisk].SetValue(diskValue(p.DiskBytes))
	}
	f.err = errMsg
	return f
}

func diskValue(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return strconv.FormatInt(n, 10)
}

func (f *createForm) Keys() help.KeyMap {
	k, e := f.keys, f.keys.edit
	return keyMap{
		short: []key.Binding{k.Next, k.Prev, k.Submit, k.Cancel, k.Help},
		rows: [][]key.Binding{
			{k.Next, k.Prev, k.Submit, k.Cancel, k.Help},
			{e.CharacterForward, e.CharacterBackward, e.WordForward, e.WordBackward, e.LineStart, e.LineEnd, e.Paste},
			{e.DeleteCharacterBackward, e.DeleteCharacterForward, e.DeleteWordBackward, e.DeleteWordForward, e.DeleteBeforeCursor, e.DeleteAfterCursor},
		},
	}
}

func (f *createForm) Title() string { return "new VM" }

func (f *createForm) focusCmd() tea.Cmd {
	for i := range f.inputs {
		f.inputs[i].Blur()
	}
	return f.inputs[f.focus].Focus()
}

// params validates the fields that are plain syntax (numbers, sizes) and
// builds the request; everything else is left to the daemon.
func (f *createForm) params(parseSize func(string) (int64, error)) (api.VMCreateParams, error) {
	v := func(i int) string { return strings.TrimSpace(f.inputs[i].Value()) }
	p := api.VMCreateParams{Name: v(fieldName), Image: v(fieldImage)}
	num := func(i int) (int, error) {
		if v(i) == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v(i))
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%s: %q is not a positive whole number", fieldLabels[i], v(i))
		}
		return n, nil
	}
	var err error
	if p.CPUs, err = num(fieldCPUs); err != nil {
		return p, err
	}
	if p.MemoryMiB, err = num(fieldMemory); err != nil {
		return p, err
	}
	if v(fieldDisk) != "" {
		if p.DiskBytes, err = parseSize(v(fieldDisk)); err != nil {
			return p, fmt.Errorf("Disk: %w", err)
		}
	}
	return p, nil
}

func (f *createForm) Update(msg tea.Msg) tea.Cmd {
	m, k := f.m, f.keys
	if km, ok := msg.(tea.KeyMsg); ok {
		switch {
		case key.Matches(km, k.Cancel):
			m.closeOverlay()
			return nil
		case key.Matches(km, k.Help):
			return m.openHelp()
		case key.Matches(km, k.Next):
			f.focus = (f.focus + 1) % numFields
			return f.focusCmd()
		case key.Matches(km, k.Prev):
			f.focus = (f.focus + numFields - 1) % numFields
			return f.focusCmd()
		case key.Matches(km, k.Submit):
			p, err := f.params(m.opts.ParseSize)
			if err != nil {
				f.err = err.Error()
				return nil
			}
			m.closeOverlay()
			return m.runOp(opRequest{op: opCreate, name: p.Name, params: p})
		}
	}
	var cmd tea.Cmd
	f.inputs[f.focus], cmd = f.inputs[f.focus].Update(msg)
	return cmd
}

func (f *createForm) View(width, height int) []string {
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
	return center(dialogStyle.Width(min(62, width-2)).Render(b.String()), width, height)
}
