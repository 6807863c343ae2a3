// Package quietterm keeps Lip Gloss from querying the terminal when the
// program starts.
//
// Bubble Tea v1's package init asks Lip Gloss whether the terminal's
// background is dark, which writes two queries to a terminal on stdout
// (OSC 11 for the background colour, then a cursor position report as a
// sentinel) and waits for the answers. Every banger command links Bubble
// Tea (for `banger tui`), so every command, `banger --help` included, would
// query the terminal: a late answer lands on the user's prompt as garbage,
// and under `script` or in a log the queries are noise.
//
// This package's init settles the question first, from $COLORFGBG (set by
// rxvt, Konsole and others) or else "dark", without touching the terminal;
// Lip Gloss then never asks. It runs before Bubble Tea's init because the
// Go specification initialises packages in import-path order among those
// whose imports are ready: it imports only Lip Gloss, and
// github.com/bangerhq/... sorts before github.com/charmbracelet/bubbletea.
// The TUI package imports it; a test runs the real binary under a
// pseudo-terminal and fails on any query.
package quietterm

import (
	"os"
	"strconv"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

func init() {
	lipgloss.SetHasDarkBackground(DarkBackground(os.Getenv("COLORFGBG")))
}

// DarkBackground reads a $COLORFGBG value ("15;0": foreground;background,
// sometimes with a middle field) and reports whether the background is
// dark: ANSI colours 0-6 and 8 are dark, 7 and 9-15 light. It is true when
// the value says nothing, as most terminals are dark.
func DarkBackground(colorfgbg string) bool {
	fields := strings.Split(colorfgbg, ";")
	bg, err := strconv.Atoi(fields[len(fields)-1])
	if err != nil || bg < 0 || bg > 15 {
		return true
	}
	return bg <= 6 || bg == 8
}
