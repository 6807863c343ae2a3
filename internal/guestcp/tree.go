// Package guestcp copies files and trees between the host and a guest
// through the guest agent, as a tar stream on one agent stream.
//
// Both directions use the same two halves: Send writes a file or tree as a
// tar stream (regular files, directories and symlinks, with modes and
// modification times; symlinks are copied as links, never followed), and
// Extract writes such a stream under a destination without ever leaving
// it: every path is resolved inside an os.Root, names with ".." or a
// leading "/" are refused, no symlink on the way to an entry is followed
// (an entry replaces a symlink in its place instead of writing through
// it), so a hostile stream can create links but not write through them.
//
// Ops: OpOut ("copy_out", guest to host: the guest accepts with OutResult
// and sends the tar stream) and OpIn ("copy_in", host to guest: the guest
// accepts, reads the tar stream until the host's end, extracts it, and
// answers with one InResult line).
package guestcp

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Agent operations.
const (
	OpOut = "copy_out"
	OpIn  = "copy_in"
)

// OutParams are the parameters of OpOut.
type OutParams struct {
	// Path is the guest path to copy; a directory needs Recursive.
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// OutResult is OpOut's result: what Path is and the bytes its regular
// files hold (for progress).
type OutResult struct {
	Dir   bool  `json:"dir"`
	Bytes int64 `json:"bytes"`
}

// InParams are the parameters of OpIn.
type InParams struct {
	// Dest is where the copy goes in the guest: into Dest/Name when Dest
	// is a directory, else to Dest itself (its parent must exist).
	Dest string `json:"dest"`
	// Name is the base name of the source.
	Name string `json:"name"`
	// Dir is true when the source is a directory.
	Dir bool `json:"dir,omitempty"`
}

// InResult is the line the guest answers OpIn with after the stream.
type InResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Target is the path the copy was written to.
	Target string `json:"target,omitempty"`
	Files  int    `json:"files,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
}

// Stats count what Send or Extract handled.
type Stats struct {
	Files int   // entries of any kind
	Bytes int64 // bytes of regular files
}

// ErrIsDir is wrapped by Inspect's error for a directory without
// recursive.
var ErrIsDir = errors.New("is a directory")

// Inspect checks that src can be sent and returns whether it is a
// directory and the bytes its regular files hold. A missing src is an
// error wrapping fs.ErrNotExist; a directory without recursive one
// wrapping ErrIsDir.
func Inspect(src string, recursive bool) (dir bool, total int64, err error) {
	fi, err := os.Lstat(src)
	if err != nil {
		return false, 0, err
	}
	if !fi.IsDir() {
		return false, fi.Size(), nil
	}
	if !recursive {
		return true, 0, fmt.Errorf("%s: %w: copy it with -r", src, ErrIsDir)
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			if i, err := d.Info(); err == nil {
				total += i.Size()
			}
		}
		return nil
	})
	return true, total, err
}

// Send writes src (a file, a symlink, or with recursive a directory tree)
// to w as a tar stream whose first entry is "." (src itself) and whose
// other entries are named relative to src. Symlinks are sent as links;
// device nodes, sockets and pipes are skipped. progress, when not nil, is
// called with the bytes of file data sent so far.
func Send(w io.Writer, src string, recursive bool, progress func(int64)) (Stats, error) {
	var st Stats
	tw := tar.NewWriter(w)
	fi, err := os.Lstat(src)
	if err != nil {
		return st, err
	}
	if fi.IsDir() && !recursive {
		return st, fmt.Errorf("%s: %w: copy it with -r", src, ErrIsDir)
	}
	buf := make([]byte, 256<<10)
	add := func(p, name string, fi fs.FileInfo) error {
		var link string
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			link = l
		case fi.Mode().IsRegular(), fi.IsDir():
		default:
			return nil // devices, sockets, pipes
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if fi.IsDir() && name != "." {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		st.Files++
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(tw, &progressReader{r: io.LimitReader(f, hdr.Size), done: &st.Bytes, progress: progress}, buf)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("read %s: it shrank from %d to %d bytes while being copied", p, hdr.Size, n)
		}
		return nil
	}
	if !fi.IsDir() {
		if err := add(src, ".", fi); err != nil {
			return st, err
		}
		return st, tw.Close()
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return add(p, filepath.ToSlash(rel), fi)
	})
	if err != nil {
		return st, err
	}
	return st, tw.Close()
}

type progressReader struct {
	r        io.Reader
	done     *int64
	progress func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	*p.done += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(*p.done)
	}
	return n, err
}

// Target resolves where a copy of a source called name (a directory when
// dir) goes for the destination dest, as cp -r does: into dest/name when
// dest is an existing directory, else dest itself, whose parent must be an
// existing directory. It returns the parent directory and the base name of
// the target.
func Target(dest, name string, dir bool) (parent, base string, err error) {
	if name == "" || name == "." || name == ".." || name == "/" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("cannot copy a source called %q: name a path below it", name)
	}
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		return dest, name, nil
	}
	parent, base = filepath.Dir(dest), filepath.Base(dest)
	if base == "." || base == ".." || base == "/" {
		return "", "", fmt.Errorf("%s: not a usable destination", dest)
	}
	fi, err := os.Stat(parent)
	if err != nil {
		return "", "", fmt.Errorf("%s: the folder it would go in: %w", dest, err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("%s: %s is not a directory", dest, parent)
	}
	if dfi, err := os.Lstat(dest); err == nil && dir && !dfi.IsDir() {
		return "", "", fmt.Errorf("%s: cannot overwrite a file with a directory", dest)
	}
	return parent, base, nil
}

// ExtractOptions tune Extract.
type ExtractOptions struct {
	// KeepSpecialBits keeps setuid, setgid and sticky bits; without it
	// they are dropped (the host side: a guest must not plant a setuid
	// file on the host).
	KeepSpecialBits bool
	// Progress, when not nil, gets the bytes of file data written so far.
	Progress func(int64)
}

// dirTimes is a directory's mode and time, set after its children.
type dirMeta struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
}

// Extract reads a tar stream made by Send from r and writes it to
// parent/base: the stream's "." entry becomes parent/base, the others go
// below it. Nothing is written outside parent/base: see the package doc.
// An existing file in an entry's place is replaced; an existing directory
// is kept and filled (its mode and time are set from the stream). The
// stream must end with its end-of-archive marker: a stream cut short is an
// error (io.ErrUnexpectedEOF) after what came was written.
func Extract(r io.Reader, parent, base string, opts ExtractOptions) (Stats, error) {
	var st Stats
	root, err := os.OpenRoot(parent)
	if err != nil {
		return st, err
	}
	defer root.Close()
	if base == "" || base == "." || base == ".." || strings.ContainsAny(base, "/") {
		return st, fmt.Errorf("invalid target name %q", base)
	}
	tr := tar.NewReader(r)
	var dirs []dirMeta
	buf := make([]byte, 256<<10)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read the copy stream: %w", err)
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return st, err
		}
		name := base
		if rel != "." {
			name = base + "/" + rel
		}
		if err := checkParents(root, name); err != nil {
			return st, err
		}
		mode := fs.FileMode(hdr.Mode) & fs.ModePerm
		if opts.KeepSpecialBits {
			if hdr.Mode&0o4000 != 0 {
				mode |= fs.ModeSetuid
			}
			if hdr.Mode&0o2000 != 0 {
				mode |= fs.ModeSetgid
			}
			if hdr.Mode&0o1000 != 0 {
				mode |= fs.ModeSticky
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			fi, err := root.Lstat(name)
			switch {
			case err == nil && fi.IsDir():
			case err == nil:
				if err := root.Remove(name); err != nil {
					return st, fmt.Errorf("replace %s: %w", name, err)
				}
				fallthrough
			default:
				if err := root.Mkdir(name, 0o700); err != nil {
					return st, fmt.Errorf("create %s: %w", name, err)
				}
			}
			dirs = append(dirs, dirMeta{name: name, mode: mode, mtime: hdr.ModTime})
		case tar.TypeReg:
			if err := clearPlace(root, name); err != nil {
				return st, err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return st, fmt.Errorf("create %s: %w", name, err)
			}
			_, err = io.CopyBuffer(f, &progressReader{r: tr, done: &st.Bytes, progress: opts.Progress}, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return st, fmt.Errorf("write %s: %w", name, err)
			}
			// The file is a regular file we just created: no link to follow.
			if err := root.Chmod(name, mode); err != nil {
				return st, fmt.Errorf("set the mode of %s: %w", name, err)
			}
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return st, fmt.Errorf("set the time of %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := clearPlace(root, name); err != nil {
				return st, err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return st, fmt.Errorf("create the link %s: %w", name, err)
			}
		default:
			continue // not made by Send
		}
		st.Files++
	}
	// Directories last, deepest first, so that writing their children
	// neither needs write permission they lack nor moves their time.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chmod(d.name, d.mode|fs.ModeDir); err != nil {
			return st, fmt.Errorf("set the mode of %s: %w", d.name, err)
		}
		if err := root.Chtimes(d.name, d.mtime, d.mtime); err != nil {
			return st, fmt.Errorf("set the time of %s: %w", d.name, err)
		}
	}
	return st, nil
}

// cleanName turns a stream's entry name into a clean relative path, or
// refuses it: absolute names and names with ".." are never made by Send.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("refusing the entry %q: an absolute or empty name", name)
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." {
			return "", fmt.Errorf("refusing the entry %q: it names a parent folder", name)
		}
	}
	return path.Clean(name), nil
}

// checkParents makes sure every folder above name (below the root) is a
// real directory, not a symlink: os.Root would follow a link that stays
// inside it, and an entry must not be written through one.
func checkParents(root *os.Root, name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		fi, err := root.Lstat(p)
		if err != nil {
			return fmt.Errorf("refusing the entry %q: %s: %w", name, p, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("refusing the entry %q: %s is not a directory", name, p)
		}
	}
	return nil
}

// clearPlace removes whatever is at name unless it is a directory, which
// is an error: a file does not replace a directory.
func clearPlace(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory: not replaced by a file", name)
	}
	if err := root.Remove(name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}
