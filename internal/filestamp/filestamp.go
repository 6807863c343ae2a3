// Package filestamp tells, without reading a file, whether it is still the
// one a process looked at before: a file replaced (another inode) or
// written (size, modification or change time) has another Stamp. The
// change time cannot be set back by a user, so a write that restores the
// size and modification time is noticed too.
package filestamp

import (
	"os"
	"syscall"
)

// Stamp is a file's identity and version as its metadata tells them.
type Stamp struct {
	size, mtime, ctime int64
	ino, dev           uint64
}

// Of returns the stamp of the file fi describes.
func Of(fi os.FileInfo) Stamp {
	s := Stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ctime = sys.Ctim.Sec*1e9 + sys.Ctim.Nsec
		s.ino = sys.Ino
		s.dev = uint64(sys.Dev)
	}
	return s
}

// Path returns the stamp of the file at path (a symbolic link is
// followed).
func Path(path string) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	return Of(fi), nil
}
