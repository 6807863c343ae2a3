package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bangerhq/banger/internal/units"
	"golang.org/x/sys/unix"
)

// CloneDisk makes dst a private, writable copy of the ext4 image src, grown to
// size bytes.
//
// The copy is a copy-on-write clone (FICLONE) when src and dst are on a file
// system that supports it (btrfs, XFS with reflink), else a sparse copy that
// only reads and writes src's data extents (SEEK_DATA/SEEK_HOLE), so its cost
// follows the data in the image, not its apparent size. When size is larger
// than src, the file is extended and its ext4 file system grown offline
// (e2fsck -pf, then resize2fs); size equal to src's size leaves the file
// system alone.
//
// It fails when size is smaller than src, when dst already exists (the error
// wraps fs.ErrExist), or when ctx is done. The copy is built under a
// temporary name in dst's folder and renamed into place; on any failure
// nothing is left at dst or under the temporary name. dst is created with
// mode 0600: a VM's disk soon holds its private SSH host key. src must not be
// written while it is being cloned.
func CloneDisk(ctx context.Context, src, dst string, size int64) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("clone disk %s to %s: %w", src, dst, err)
		}
	}()

	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	srcSize := st.Size()
	if size < srcSize {
		return fmt.Errorf("requested size %d bytes (%s) is smaller than the image's %d bytes (%s)",
			size, units.IEC(size), srcSize, units.IEC(srcSize))
	}
	var tools map[string]string
	if size > srcSize {
		if tools, err = lookTools(toolE2fsck, toolResize2fs); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s: %w", dst, os.ErrExist)
	}

	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := out.Name()
	defer func() {
		if out != nil {
			out.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()

	if err := copyFile(ctx, out, in, srcSize); err != nil {
		return err
	}
	if size > srcSize {
		if err := out.Truncate(size); err != nil {
			return fmt.Errorf("grow %s to %d bytes: %w", tmp, size, err)
		}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		out = nil
		return err
	}
	out = nil

	if size > srcSize {
		if err := growExt4(ctx, tools, tmp); err != nil {
			return err
		}
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// copyFile makes out (empty) hold the same bytes as in: a reflink when the
// file system can, otherwise a hole-preserving copy.
func copyFile(ctx context.Context, out, in *os.File, size int64) error {
	err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if err == nil {
		return nil
	}
	// EOPNOTSUPP/ENOTTY: no reflink here; EXDEV: different file systems;
	// EINVAL: e.g. unaligned or unsupported. Anything else is a real error.
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) &&
		!errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("FICLONE: %w", err)
	}
	return sparseCopy(ctx, out, in, size)
}

// SparseCopy makes out (empty) hold the bytes of in, size bytes long,
// copying only in's data extents (SEEK_DATA/SEEK_HOLE): holes stay holes.
// in may be any file that supports those seeks, a memfd included.
func SparseCopy(ctx context.Context, out, in *os.File, size int64) error {
	return sparseCopy(ctx, out, in, size)
}

// sparseCopy copies the data extents of in to out at the same offsets and
// sets out's length to size; holes are never read.
func sparseCopy(ctx context.Context, out, in *os.File, size int64) error {
	inFd, outFd := int(in.Fd()), int(out.Fd())
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", in.Name(), err)
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", in.Name(), err)
		}
		if err := copyRange(ctx, outFd, inFd, data, hole-data); err != nil {
			return fmt.Errorf("copy bytes %d-%d of %s: %w", data, hole, in.Name(), err)
		}
		off = hole
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	return nil
}

// copyChunk bounds one copy_file_range call so cancellation is noticed.
const copyChunk = 64 << 20

// copyRange copies n bytes at off from inFd to outFd, with copy_file_range
// (in-kernel; may itself share blocks) and a read/write fallback.
func copyRange(ctx context.Context, outFd, inFd int, off, n int64) error {
	useCFR := true
	buf := []byte(nil)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := min(n, copyChunk)
		if useCFR {
			roff, woff := off, off
			c, err := unix.CopyFileRange(inFd, &roff, outFd, &woff, int(chunk), 0)
			switch {
			case err == nil && c > 0:
				off += int64(c)
				n -= int64(c)
				continue
			case err == nil: // unexpected EOF: the file shrank
				return io.ErrUnexpectedEOF
			case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS),
				errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
				useCFR = false
			default:
				return fmt.Errorf("copy_file_range: %w", err)
			}
		}
		if buf == nil {
			buf = make([]byte, 1<<20)
		}
		b := buf[:min(int64(len(buf)), n)]
		r, err := unix.Pread(inFd, b, off)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if r == 0 {
			return io.ErrUnexpectedEOF
		}
		if _, err := unix.Pwrite(outFd, b[:r], off); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		off += int64(r)
		n -= int64(r)
	}
	return nil
}

// growExt4 checks the ext4 file system in the image file and grows it to the
// file's length, offline.
func growExt4(ctx context.Context, tools map[string]string, path string) error {
	// e2fsck -p exit status: 1 means errors were fixed, 2 that a reboot would
	// be needed for a mounted fs; both are fine for an image file.
	if _, err := run(ctx, tools["e2fsck"], "-pf", path); err != nil {
		var exit interface{ ExitCode() int }
		if !errors.As(err, &exit) || exit.ExitCode() > 2 {
			return fmt.Errorf("check file system before resize: %w", err)
		}
	}
	if _, err := run(ctx, tools["resize2fs"], path); err != nil {
		return fmt.Errorf("grow file system: %w", err)
	}
	return nil
}

// renameNoReplace renames oldpath to newpath, failing with an error wrapping
// fs.ErrExist rather than replacing an existing newpath.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rename into place: %s: %w", newpath, os.ErrExist)
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("rename %s to %s: %w", oldpath, newpath, err)
	}
	// No RENAME_NOREPLACE on this file system: link(2) also refuses to replace.
	if err := os.Link(oldpath, newpath); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return os.Remove(oldpath)
}
