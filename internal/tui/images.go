package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// imageList is the images page.
type imageList struct {
	m      *Model
	keys   imageListKeys
	cursor int
}

type imageListKeys struct {
	nav  navKeys
	page pageKeys // Switch: back to the VMs
}

func newImageList(m *Model) *imageList {
	return &imageList{m: m, keys: imageListKeys{
		nav: newNavKeys(),
		page: pageKeys{Create: bind("new vm", "n"), Switch: bind("vms", "i", "tab", "esc"),
			Help: bind("more", "?"), Quit: bind("quit", "q")},
	}}
}

func (l *imageList) Keys() help.KeyMap {
	k, p := l.keys, l.keys.page
	return keyMap{
		short: []key.Binding{k.nav.Up, k.nav.Down, p.Create, p.Switch, p.Help, p.Quit},
		rows:  [][]key.Binding{append(k.nav.all(), p.Switch, p.Help, p.Quit), {p.Create}},
	}
}

func (l *imageList) Title() string { return fmt.Sprintf("images: %d", len(l.m.images)) }

// clamp keeps the cursor inside the list after it changed.
func (l *imageList) clamp() {
	if l.cursor >= len(l.m.images) {
		l.cursor = max(0, len(l.m.images)-1)
	}
}

func (l *imageList) Update(msg tea.Msg) tea.Cmd {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	m, k := l.m, l.keys
	if d, ok := k.nav.step(km, m.bodyHeight()-3); ok {
		l.cursor = max(0, min(len(m.images)-1, l.cursor+d))
		return nil
	}
	cmd, _ := k.page.handle(m, km, m.vmList)
	return cmd
}

func (l *imageList) View(width, height int) []string {
	images := l.m.images
	cols := []column{{"NAME", 20, false}, {"SOURCE", 22, false}, {"SIZE", 9, true}, {"KERNEL", 10, false}, {"USED BY", 0, false}}
	used := 2
	for _, c := range cols {
		used += c.width + 1
	}
	cols[len(cols)-1].width = max(5, width-used)
	out := []string{headerStyle.Render("  " + strings.TrimRight(renderRow(cols, columnTitles(cols)), " "))}
	if len(images) == 0 {
		return append(out, dimStyle.Render("  no images: build one with `banger image build`"))
	}
	rows := max(1, height-3)
	start := max(0, l.cursor-rows+1)
	for i := start; i < len(images) && i < start+rows; i++ {
		im := images[i]
		usedBy := strings.Join(im.UsedBy, ", ")
		if usedBy == "" {
			usedBy = "-"
		}
		line := renderRow(cols, []string{im.Name, im.Source, sizeCell(im.SizeBytes), im.KernelRelease, usedBy})
		if i == l.cursor {
			out = append(out, selStyle.Render("▸ "+line))
		} else {
			out = append(out, "  "+line)
		}
	}
	if l.cursor < len(images) {
		out = fit(out, height-1)
		out = append(out, labelStyle.Render(" Path    ")+images[l.cursor].Path)
	}
	return out
}
