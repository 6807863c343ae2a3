// Package mounts is banger's shared folders: a host folder mounted in a
// guest through virtio-fs (QEMU's vhost-user-fs device, served by
// virtiofsd on the host).
//
// The pieces: Spec (what `--mount HOST_DIR[:GUEST_DIR][:ro]` says), the
// host's virtiofsd (StartVirtiofsd), and, in package guestmount, the guest
// agent's operation that mounts a share once the guest runs. virtiofsd
// runs in a user namespace that maps the guest's root to the folder's
// owner: what the guest creates belongs to that user on the host, never
// to root (unless root owns the folder), and virtiofsd holds no host
// privilege beyond that user's.
package mounts

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// Spec is one shared folder: HostDir (absolute, on the host) mounted at
// GuestDir (absolute, in the guest), read-only when ReadOnly.
type Spec struct {
	HostDir  string `json:"host_dir"`
	GuestDir string `json:"guest_dir"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// String is the canonical form HOST_DIR:GUEST_DIR[:ro].
func (s Spec) String() string {
	out := s.HostDir + ":" + s.GuestDir
	if s.ReadOnly {
		out += ":ro"
	}
	return out
}

// form is the syntax, for error messages.
const form = "use HOST_DIR[:GUEST_DIR][:ro], such as ~/src:/src or /data:/data:ro"

// ParseSpec parses HOST_DIR[:GUEST_DIR][:ro|:rw]. HOST_DIR is made
// absolute against cwd (the caller's working folder); GUEST_DIR defaults
// to HOST_DIR (the same path in the guest). Neither may hold a colon.
// GuestDir is checked with CheckGuestDir.
func ParseSpec(text, cwd string) (Spec, error) {
	parts := strings.Split(text, ":")
	var s Spec
	if n := len(parts); n > 1 && (parts[n-1] == "ro" || parts[n-1] == "rw") {
		s.ReadOnly = parts[n-1] == "ro"
		parts = parts[:n-1]
	}
	switch len(parts) {
	case 1:
	case 2:
		s.GuestDir = parts[1]
	default:
		return Spec{}, fmt.Errorf("mount %q: too many colons (folders with a colon in their name cannot be shared): %s", text, form)
	}
	if parts[0] == "" {
		return Spec{}, fmt.Errorf("mount %q: no host folder: %s", text, form)
	}
	s.HostDir = parts[0]
	if !filepath.IsAbs(s.HostDir) {
		if cwd == "" {
			return Spec{}, fmt.Errorf("mount %q: the host folder must be an absolute path", text)
		}
		s.HostDir = filepath.Join(cwd, s.HostDir)
	}
	s.HostDir = filepath.Clean(s.HostDir)
	if s.GuestDir == "" {
		s.GuestDir = s.HostDir
	}
	if err := CheckGuestDir(s.GuestDir); err != nil {
		return Spec{}, fmt.Errorf("mount %q: %w", text, err)
	}
	s.GuestDir = path.Clean(s.GuestDir)
	return s, nil
}

// reserved are guest folders a share may not cover: the system's, and
// root's home (its .ssh holds the key banger logs in with).
var reserved = []string{"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
	"/proc", "/root", "/root/.ssh", "/run", "/sbin", "/sys", "/usr", "/var", "/tmp"}

// reservedTrees are guest folders under which no share may be.
var reservedTrees = []string{"/proc", "/sys", "/dev", "/run", "/root/.ssh", "/etc", "/usr", "/boot"}

// CheckGuestDir refuses a guest folder that is not absolute, has a colon
// or a control character, or would cover part of the guest system.
func CheckGuestDir(dir string) error {
	if !path.IsAbs(dir) {
		return fmt.Errorf("guest folder %q: want an absolute path: %s", dir, form)
	}
	if strings.ContainsFunc(dir, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ':' }) {
		return fmt.Errorf("guest folder %q has a colon or a control character", dir)
	}
	clean := path.Clean(dir)
	for _, r := range reserved {
		if clean == r {
			return fmt.Errorf("guest folder %s would hide the guest's own %s: choose another, such as /mnt/share or /src", clean, r)
		}
	}
	for _, r := range reservedTrees {
		if strings.HasPrefix(clean, r+"/") {
			return fmt.Errorf("guest folder %s is inside the guest's %s: choose another, such as /mnt/share or /src", clean, r)
		}
	}
	return nil
}

// Tag is the virtio-fs tag of a VM's i-th share (the name the guest mounts
// it by).
func Tag(i int) string { return fmt.Sprintf("banger%d", i) }

// CheckSet refuses shares of one VM that mount at the same guest folder,
// or one inside another.
func CheckSet(specs []Spec) error {
	for i, a := range specs {
		for _, b := range specs[:i] {
			if a.GuestDir == b.GuestDir || strings.HasPrefix(a.GuestDir, b.GuestDir+"/") || strings.HasPrefix(b.GuestDir, a.GuestDir+"/") {
				return fmt.Errorf("mounts %s and %s overlap in the guest: give each its own guest folder", b, a)
			}
		}
	}
	return nil
}

// ErrNoVirtiofs is wrapped by the error of a VMM that cannot share
// folders (Firecracker has no virtio-fs device).
var ErrNoVirtiofs = errors.New("this VMM has no virtio-fs")
