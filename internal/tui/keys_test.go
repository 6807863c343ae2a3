package tui

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// allKeys is every key a terminal can send that Bubble Tea names: the
// special keys, the printable ASCII characters, and each with alt.
func allKeys() []tea.KeyMsg {
	var out []tea.KeyMsg
	for t := tea.KeyType(-200); t <= 127; t++ {
		if t == tea.KeyRunes || t.String() == "" {
			continue
		}
		out = append(out, tea.KeyMsg{Type: t}, tea.KeyMsg{Type: t, Alt: true})
	}
	for r := rune(32); r < 127; r++ {
		out = append(out, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}}, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: true})
	}
	return out
}

// snapshot is what a key can change that a user would notice.
func snapshot(m *Model) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\npage %p overlay %p quit %v status %q pending %v ssh %q\n",
		m.View(), m.page, m.overlay, m.quit, m.status, m.pending, m.sshBusy)
	switch c := m.front().(type) {
	case *createForm:
		for _, in := range c.inputs {
			fmt.Fprintf(&b, "%q@%d ", in.Value(), in.Position())
		}
		fmt.Fprintf(&b, "focus %d", c.focus)
	case *console:
		fmt.Fprintf(&b, "y %d", c.vp.YOffset)
	}
	return b.String()
}

// listed reports whether keys' full help, or the root's, has a binding
// for k.
func listed(keys []key.Binding, k string) bool {
	for _, b := range append(keys, rootKeyMap.QuitNow) {
		for _, bk := range b.Keys() {
			if bk == k {
				return true
			}
		}
	}
	return false
}

// frontSetups put each component in front, in a state where its keys act:
// a list with the cursor in the middle, a console scrolled part way, a
// form with text around the cursor.
func frontSetups(t *testing.T) map[string]func() *Model {
	log := filepath.Join(t.TempDir(), "console.log")
	var lines []string
	for i := 0; i < 200; i++ {
		lines = append(lines, fmt.Sprintf("[%8.3f] boot line %d", float64(i)/10, i))
	}
	os.WriteFile(log, []byte(strings.Join(lines, "\n")), 0o644)
	loaded := func() *Model {
		b := seedBasic()
		m := newTestModel(b)
		m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
		vms, _ := b.ListVMs(m.ctx)
		ims, _ := b.ListImages(m.ctx)
		m.onList(listMsg{vms: vms, images: ims})
		m.vmList.cursor, m.vmList.selected = 1, vms[1].Name
		m.imageList.cursor = 1
		return m
	}
	return map[string]func() *Model{
		"vm list": loaded,
		"image list": func() *Model {
			m := loaded()
			m.showPage(m.imageList)
			return m
		},
		"console": func() *Model {
			m := loaded()
			vm := m.vms[1]
			vm.ConsoleLog = log
			m.openConsole(vm)
			c := m.page.(*console)
			c.Update(readConsole(log, 0))
			c.View(m.width, m.bodyHeight())
			c.vp.SetYOffset(100)
			return m
		},
		"create form": func() *Model {
			m := loaded()
			m.openOverlay(newCreateForm(m))
			f := m.overlay.(*createForm)
			f.inputs[fieldName].SetValue("abc def")
			f.inputs[fieldName].SetCursor(4)
			f.focus = 1 // between fields: tab and shift+tab both move
			f.focusCmd()
			f.focus = 0
			f.focusCmd()
			return m
		},
		"confirm": func() *Model {
			m := loaded()
			m.openOverlay(newConfirm(m, "Delete VM alpha?", "Really.", func() tea.Cmd { return nil }))
			return m
		},
	}
}

// TestHelpListsEveryKey walks every key through every component in front
// and fails for a key that does something the component's help (the ?
// view, or f1 in the form) does not list. Typing into the form's fields is
// text, not a binding; the help view closes on any key, as its help says.
func TestHelpListsEveryKey(t *testing.T) {
	for name, setup := range frontSetups(t) {
		t.Run(name, func(t *testing.T) {
			acted := 0
			for _, k := range allKeys() {
				m := setup()
				front := m.front()
				var bindings []key.Binding
				for _, row := range front.Keys().FullHelp() {
					bindings = append(bindings, row...)
				}
				before := snapshot(m)
				m.Update(k)
				if snapshot(m) == before {
					continue
				}
				acted++
				if _, isForm := front.(*createForm); isForm && k.Type == tea.KeyRunes && !listed(bindings, k.String()) {
					if f, ok := m.overlay.(*createForm); ok && strings.Contains(f.inputs[fieldName].Value(), string(k.Runes)) {
						continue // typed text
					}
				}
				if !listed(bindings, k.String()) {
					t.Errorf("key %q acts on the %s, but its help does not list it", k.String(), name)
				}
			}
			if acted == 0 {
				t.Fatalf("no key acted on the %s: the walk proves nothing", name)
			}
			// And the other way: the short help line is a subset of the
			// full help.
			m := setup()
			for _, b := range m.front().Keys().ShortHelp() {
				var rows []key.Binding
				for _, row := range m.front().Keys().FullHelp() {
					rows = append(rows, row...)
				}
				if !listed(rows, b.Keys()[0]) {
					t.Errorf("%q is on the help line but not in the full help", b.Help().Key)
				}
			}
		})
	}
}

// TestHelpShowsEveryKeyName: a binding's help names all of its keys, so a
// key in the key map is a key the help shows.
func TestHelpShowsEveryKeyName(t *testing.T) {
	for name, setup := range frontSetups(t) {
		m := setup()
		for _, row := range withRoot(m.front().Keys()).FullHelp() {
			for _, b := range row {
				shown := strings.Split(b.Help().Key, "/")
				if len(shown) != len(b.Keys()) {
					t.Errorf("%s: binding %q shows %v for keys %v", name, b.Help().Desc, shown, b.Keys())
				}
			}
		}
	}
}
