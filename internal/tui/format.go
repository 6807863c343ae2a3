package tui

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/units"
)

// sizeCell is a size for a table cell: "-" when unknown (zero).
func sizeCell(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.IEC(n)
}

// humanDuration formats an uptime compactly: "42s", "5m3s", "3h12m", "4d2h".
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours()/24), int(d.Hours())%24)
	}
}

// uptime is how long vm has been running (paused or not), or "-" when it
// is not running.
func uptime(vm api.VM, now time.Time) string {
	if (vm.State != api.StateRunning && vm.State != api.StatePaused) || vm.StartedAt == nil {
		return "-"
	}
	return humanDuration(now.Sub(*vm.StartedAt))
}

// isDaemonError reports whether err came from the daemon (as opposed to
// not reaching it).
func isDaemonError(err error) bool {
	var re *api.RemoteError
	return errors.As(err, &re)
}

// errText is an error as one line for the status bar.
func errText(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func sortStrings(s []string) { sort.Strings(s) }
