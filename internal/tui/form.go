package tui

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

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

// createForm is the "new VM" form. Checks that need the host (name rules,
// image existence, CPU and memory limits) are the daemon's: its message is
// shown in the form.
type createForm struct {
	inputs [numFields]textinput.Model
	focus  int
	err    string
	images []string
}

func newCreateForm(images []api.Image) *createForm {
	f := &createForm{}
	placeholders := [numFields]string{"random", "default", "2", "1024", "4G"}
	limits := [numFields]int{63, 64, 4, 7, 8}
	for i := range f.inputs {
		in := textinput.New()
		in.Prompt = ""
		in.Placeholder = placeholders[i]
		in.CharLimit = limits[i]
		in.Width = 32
		f.inputs[i] = in
	}
	for _, im := range images {
		f.images = append(f.images, im.Name)
	}
	return f
}

// formFrom reopens the form with the values of a failed create.
func formFrom(p api.VMCreateParams, images []api.Image, errMsg string) *createForm {
	f := newCreateForm(images)
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

func (f *createForm) focusCmd() tea.Cmd {
	for i := range f.inputs {
		f.inputs[i].Blur()
	}
	return f.inputs[f.focus].Focus()
}

func (f *createForm) update(msg tea.Msg) tea.Cmd {
	var cmd tea.Cmd
	f.inputs[f.focus], cmd = f.inputs[f.focus].Update(msg)
	return cmd
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

func (m *Model) formKey(msg tea.KeyMsg) tea.Cmd {
	f := m.form
	switch msg.String() {
	case "esc":
		m.form, m.overlay = nil, overlayNone
		return nil
	case "tab", "down":
		f.focus = (f.focus + 1) % numFields
		return f.focusCmd()
	case "shift+tab", "up":
		f.focus = (f.focus + numFields - 1) % numFields
		return f.focusCmd()
	case "enter":
		p, err := f.params(m.opts.ParseSize)
		if err != nil {
			f.err = err.Error()
			return nil
		}
		m.form, m.overlay = nil, overlayNone
		key := p.Name
		if key == "" {
			key = "(new vm)"
		}
		return m.runOp("create", key, "creating", &p, func(ctx context.Context, b Backend) (api.VM, error) {
			return b.CreateVM(ctx, p)
		})
	}
	return f.update(msg)
}
