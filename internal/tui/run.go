package tui

import (
	"context"
	"errors"
	"fmt"

	tea "github.com/charmbracelet/bubbletea"
)

// Run shows the TUI on the terminal until the user quits or ctx ends. The
// terminal is restored on return.
func Run(ctx context.Context, opts Options) error {
	if opts.Backend == nil {
		return errors.New("tui: no daemon connection")
	}
	m := New(ctx, opts)
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(ctx))
	if _, err := p.Run(); err != nil {
		if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("run tui: %w", err)
	}
	return nil
}
