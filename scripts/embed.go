// Package scripts embeds the shell scripts banger runs on the host (the
// shared rootfs customisation) and the guest files they install, so an
// installed bangerd always uses the scripts it was built with.
package scripts

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed customize.sh guest
var files embed.FS

// WriteTo writes customize.sh and guest/ into a new folder under parent and
// returns that folder; the caller removes it when done. Everyone may read
// it: the build sandbox, whose ids are not the daemon's, runs the script.
func WriteTo(parent string) (string, error) {
	dir, err := os.MkdirTemp(parent, "scripts-")
	if err != nil {
		return "", fmt.Errorf("write scripts: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("write scripts: %w", err)
	}
	err = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("write scripts: %w", err)
	}
	return dir, nil
}
