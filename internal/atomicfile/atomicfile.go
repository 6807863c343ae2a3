// Package atomicfile writes files so that a reader, or the next process
// after a crash, sees either the old content or the new, never a part:
// the data goes to a temporary file in the same directory, is fsynced, and
// is renamed over the target (tailscale's atomicfile does the same).
//
// It is the one implementation of that sequence in banger; write through it
// rather than by hand.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically with mode perm (exactly perm:
// the umask does not apply). The directory must exist. An existing file at
// path is replaced; a symlink at path is replaced, never followed. Errors
// name path.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// File is a file being written atomically: write to it, then Commit to put
// it at its path, or Abort to drop it. Abort after Commit does nothing, so
// `defer f.Abort()` right after Create is the usual pattern.
type File struct {
	*os.File
	path string
	perm fs.FileMode
	done bool
}

// Create starts an atomic write of path: it returns a temporary file in
// path's directory, which only Commit makes visible at path.
func Create(path string, perm fs.FileMode) (*File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{File: tmp, path: path, perm: perm}, nil
}

// Commit sets the mode, fsyncs and closes the temporary file, renames it to
// the target path and fsyncs the directory so the rename survives a crash.
// On any error the temporary file is removed and the target is unchanged.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("write %s: %w", f.path, fs.ErrClosed)
	}
	f.done = true
	tmp := f.Name()
	err := f.Chmod(f.perm)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	// The data is in place; a failed directory sync only weakens
	// durability across a power cut, which the caller can do nothing about.
	_ = syncDir(filepath.Dir(f.path))
	return nil
}

// Abort drops the temporary file, leaving the target as it was. It does
// nothing after Commit or a previous Abort.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	err := f.Close()
	if rerr := os.Remove(f.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
