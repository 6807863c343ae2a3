// Package guestmount is the guest agent's operation that mounts a shared
// folder (package mounts) in the guest.
package guestmount

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerhq/banger/internal/agent"
	"github.com/bangerhq/banger/internal/mounts"
)

// Op is the agent operation that mounts one share in the guest.
const Op = "mount"

// Params are Op's parameters.
type Params struct {
	Tag      string `json:"tag"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Handler is the guest agent's handler for Op: it loads the virtiofs
// module, makes the folder and mounts the share there (read-only when
// asked). A share mounted there already is left as it is, so the daemon
// may ask again (after a daemon restart).
func Handler(ctx context.Context, st *agent.Stream) error {
	var p Params
	if err := st.Decode(&p); err != nil {
		return err
	}
	if p.Tag == "" || mounts.CheckGuestDir(p.Path) != nil {
		return agent.Errorf(agent.CodeInvalid, "mount: want a tag and an allowed absolute folder, got %q %q", p.Tag, p.Path)
	}
	if mounted(p.Tag, p.Path) {
		return st.Accept(nil)
	}
	if _, err := os.Stat("/sys/module/virtiofs"); err != nil {
		if out, err := exec.CommandContext(ctx, "modprobe", "virtiofs").CombinedOutput(); err != nil {
			return fmt.Errorf("mount %s: load the virtiofs module: %v: %s", p.Path, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.MkdirAll(p.Path, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", p.Path, err)
	}
	var flags uintptr = unix.MS_NODEV
	if p.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(p.Tag, p.Path, "virtiofs", flags, ""); err != nil {
		return fmt.Errorf("mount virtio-fs %s at %s: %w", p.Tag, p.Path, err)
	}
	return st.Accept(nil)
}

// mounted reports whether virtio-fs tag is mounted at path.
func mounted(tag, path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) >= 5 && len(b) >= 2 && unescape(a[4]) == path && b[0] == "virtiofs" && b[1] == tag {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
