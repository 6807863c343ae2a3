package tui

import (
	"context"
	"errors"
	"fmt"

	tea "github.com/charmbracelet/bubbletea"

	// Imported before Bubble Tea initialises: see its documentation.
	_ "github.com/bangerhq/banger/internal/tui/quietterm"
)

// Run shows the TUI on the terminal until the user quits or ctx ends. The
// terminal is restored on return.
func Run(ctx context.Context, opts Options) error {
	if opts.Backend == nil {
		return errors.New("tui: no daemon connection")
	}
	m := New(ctx, opts)
	p := tea.NewProgram(m, programOptions(ctx)...)
	if _, err := p.Run(); err != nil {
		if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("run tui: %w", err)
	}
	return nil
}

// fps caps redraws. Bubble Tea's renderer wakes at this rate even when
// nothing changed; 30 is smooth for a spinner and halves idle wakeups
// compared with the default 60.
const fps = 30

func programOptions(ctx context.Context, extra ...tea.ProgramOption) []tea.ProgramOption {
	return append([]tea.ProgramOption{tea.WithAltScreen(), tea.WithContext(ctx), tea.WithFPS(fps)}, extra...)
}
