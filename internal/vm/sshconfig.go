package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerhq/banger/internal/atomicfile"
	"github.com/bangerhq/banger/internal/guestssh"
	"github.com/bangerhq/banger/internal/store"
)

// SSHConfig returns the OpenSSH config for every VM (guestssh.Config) and
// the file the daemon keeps it in.
func (s *Service) SSHConfig(ctx context.Context) (text, path string, err error) {
	rows, err := store.ListVMs(ctx, s.store.DB)
	if err != nil {
		return "", "", err
	}
	var vms []guestssh.ConfigVM
	for _, r := range rows {
		if r.IP == "" || r.DesiredState == store.DesiredCreating {
			continue
		}
		vms = append(vms, guestssh.ConfigVM{Name: r.Name, Addr: r.IP, KnownHostsFile: s.knownHosts(r.ID)})
	}
	path = s.cfg.Dirs.SSHConfig()
	return guestssh.Config(path, s.cfg.Dirs.SSHKey(), vms), path, nil
}

// writeSSHConfig rewrites the daemon's OpenSSH config file after the set of
// VMs changed (and at start). A failure is logged: SSH by name then uses
// the previous file until the next change.
func (s *Service) writeSSHConfig(ctx context.Context) {
	text, path, err := s.SSHConfig(context.WithoutCancel(ctx))
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			err = atomicfile.WriteFile(path, []byte(text), 0o600)
		}
	}
	if err != nil {
		s.log.Warn("write the ssh config of VMs", "err", fmt.Errorf("%s: %w", path, err))
	}
}
