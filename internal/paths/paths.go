// Package paths resolves where banger keeps its files, following the XDG base
// directory specification. Setting the XDG variables is how tests get a
// private, isolated banger.
package paths

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// MaxSocketPath is the longest Unix socket path the kernel accepts
// (sizeof(sun_path) - 1).
const MaxSocketPath = 107

// Dirs holds every directory banger uses. All are absolute.
type Dirs struct {
	Config  string // $XDG_CONFIG_HOME/banger: config.toml
	State   string // $XDG_STATE_HOME/banger: banger.db, vms/, daemon log, SSH key
	Data    string // $XDG_DATA_HOME/banger: images/
	Cache   string // $XDG_CACHE_HOME/banger: downloads, build cache
	Runtime string // $XDG_RUNTIME_DIR/banger: bangerd.sock
}

// Resolve computes the directories from the environment. It does not create
// them; call Ensure for that.
func Resolve() (Dirs, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return Dirs{}, fmt.Errorf("resolve home directory: %w", err)
	}
	xdg := func(env, fallback string) string {
		if v := os.Getenv(env); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "banger")
		}
		return filepath.Join(home, fallback, "banger")
	}
	d := Dirs{
		Config: xdg("XDG_CONFIG_HOME", ".config"),
		State:  xdg("XDG_STATE_HOME", ".local/state"),
		Data:   xdg("XDG_DATA_HOME", ".local/share"),
		Cache:  xdg("XDG_CACHE_HOME", ".cache"),
	}
	if v := os.Getenv("XDG_RUNTIME_DIR"); v != "" && filepath.IsAbs(v) {
		d.Runtime = filepath.Join(v, "banger")
	} else {
		// A private fallback: per-uid folder in /tmp, created 0700.
		d.Runtime = filepath.Join(os.TempDir(), "banger-"+strconv.Itoa(os.Getuid()))
	}
	return d, nil
}

// Ensure creates every directory with mode 0700.
func (d Dirs) Ensure() error {
	for _, p := range []string{d.Config, d.State, d.Data, d.Cache, d.Runtime, d.VMsDir(), d.ImagesDir()} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	// The runtime dir may be a shared /tmp fallback: make sure it is ours.
	st, err := os.Stat(d.Runtime)
	if err != nil {
		return err
	}
	if err := checkOwned(d.Runtime, st); err != nil {
		return err
	}
	return os.Chmod(d.Runtime, 0o700)
}

// Socket is the daemon's Unix socket.
func (d Dirs) Socket() string { return filepath.Join(d.Runtime, "bangerd.sock") }

// PIDFile holds the daemon's pid.
func (d Dirs) PIDFile() string { return filepath.Join(d.Runtime, "bangerd.pid") }

// Database is the SQLite file.
func (d Dirs) Database() string { return filepath.Join(d.State, "banger.db") }

// DaemonLog is where an auto-started daemon writes its log.
func (d Dirs) DaemonLog() string { return filepath.Join(d.State, "bangerd.log") }

// VMsDir holds one folder per VM.
func (d Dirs) VMsDir() string { return filepath.Join(d.State, "vms") }

// VMDir is the folder of one VM.
func (d Dirs) VMDir(id string) string { return filepath.Join(d.VMsDir(), id) }

// TemplatesDir holds the warm templates (see package vm), one folder each.
func (d Dirs) TemplatesDir() string { return filepath.Join(d.State, "templates") }

// ImagesDir holds one folder per image.
func (d Dirs) ImagesDir() string { return filepath.Join(d.Data, "images") }

// SSHKey is the daemon's private key used to reach guests.
func (d Dirs) SSHKey() string { return filepath.Join(d.State, "ssh", "id_ed25519") }

// SSHConfig is the OpenSSH config file the daemon keeps current with a
// block per VM (`banger ssh-config`), for an Include in ~/.ssh/config.
func (d Dirs) SSHConfig() string { return filepath.Join(d.State, "ssh", "config") }

// ConfigFile is the user's config.toml.
func (d Dirs) ConfigFile() string { return filepath.Join(d.Config, "config.toml") }

// CheckSocketPath returns a clear error when p is too long for a Unix socket.
func CheckSocketPath(p string) error {
	if len(p) > MaxSocketPath {
		return fmt.Errorf("unix socket path %q is %d bytes, longer than the kernel's limit of %d: set XDG_RUNTIME_DIR or XDG_STATE_HOME to a shorter directory", p, len(p), MaxSocketPath)
	}
	return nil
}
