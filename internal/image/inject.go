package image

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/bangerhq/banger/internal/image/tarlimit"
)

// File is one file (or directory) that InjectFiles writes into an image.
type File struct {
	// Path is the absolute, clean path inside the image. It must not contain
	// white space, quotes or control characters (see checkDebugfsPath).
	Path string
	// Mode holds the permission bits, plus os.ModeSetuid, os.ModeSetgid and
	// os.ModeSticky when wanted. With os.ModeDir set, Path is made a
	// directory (an existing one keeps its contents) and Data is ignored.
	Mode os.FileMode
	// UID and GID are the numeric owner inside the image.
	UID, GID int
	// Data is the complete content of a regular file.
	Data []byte
}

// InjectFiles writes files into the ext4 image disk without mounting it,
// using debugfs -w. Missing parent directories are created (mode 0755, owned
// by 0:0; list a directory File before the files in it to choose otherwise),
// an existing file or symlink at a path is replaced (an existing directory is
// an error), and each File's mode, owner and group are set. Files are
// written in order.
//
// The image must not be in use (no running VM, not mounted). After writing,
// InjectFiles reads every path back and returns an error naming the first
// one whose type, mode, owner or size is not what was asked for; debugfs
// itself does not report failed commands in its exit status.
func InjectFiles(ctx context.Context, disk string, files []File) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("inject files into %s: %w", disk, err)
		}
	}()
	if len(files) == 0 {
		return nil
	}
	debugfs, err := lookTool(toolDebugfs)
	if err != nil {
		return err
	}
	if st, err := os.Stat(disk); err != nil {
		return err
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", disk)
	}
	for _, f := range files {
		if err := checkDebugfsPath(f.Path); err != nil {
			return err
		}
		if f.UID < 0 || f.GID < 0 {
			return fmt.Errorf("%s: negative uid or gid", f.Path)
		}
	}

	tmp, err := os.MkdirTemp("", "banger-inject-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Its files are named in the command file too.
	if err := checkDebugfsPath(tmp); err != nil {
		return fmt.Errorf("temporary folder: %w (set TMPDIR to a plain path)", err)
	}

	// What is there already. Only missing directories may be made: in
	// e2fsprogs 1.47.0 a debugfs mkdir of an existing name leaves a stray
	// directory inode behind, which e2fsck then reports.
	var query []string
	seen := map[string]bool{}
	for _, f := range files {
		for d := f.Path; d != "/"; d = path.Dir(d) {
			if !seen[d] {
				seen[d] = true
				query = append(query, d)
			}
		}
	}
	existing, _, err := debugfsStats(ctx, debugfs, tmp, disk, query)
	if err != nil {
		return err
	}

	var cmds strings.Builder
	mkdirs := func(dir string) error {
		var chain []string
		for d := dir; d != "/"; d = path.Dir(d) {
			st, ok := existing[d]
			if !ok {
				chain = append(chain, d)
				continue
			}
			if st.typ != "directory" && st.typ != "symlink" {
				return fmt.Errorf("%s exists and is a %s, not a directory", d, st.typ)
			}
			break
		}
		for i := len(chain) - 1; i >= 0; i-- {
			fmt.Fprintf(&cmds, "mkdir %s\n", chain[i])
			existing[chain[i]] = inodeStat{typ: "directory"}
		}
		return nil
	}
	for i, f := range files {
		if err := mkdirs(path.Dir(f.Path)); err != nil {
			return err
		}
		st, exists := existing[f.Path]
		if f.Mode.IsDir() {
			if exists && st.typ != "directory" {
				return fmt.Errorf("%s exists and is a %s, not a directory", f.Path, st.typ)
			}
			if err := mkdirs(f.Path); err != nil {
				return err
			}
		} else {
			if exists && st.typ == "directory" {
				return fmt.Errorf("%s is a directory in the image; will not replace it with a file", f.Path)
			}
			src := filepath.Join(tmp, strconv.Itoa(i))
			if err := os.WriteFile(src, f.Data, 0o600); err != nil {
				return err
			}
			if exists {
				fmt.Fprintf(&cmds, "rm %s\n", f.Path)
			}
			fmt.Fprintf(&cmds, "cd %s\n", path.Dir(f.Path))
			fmt.Fprintf(&cmds, "write %s %s\n", src, path.Base(f.Path))
			fmt.Fprintf(&cmds, "cd /\n")
			existing[f.Path] = inodeStat{typ: "regular"}
		}
		fmt.Fprintf(&cmds, "sif %s mode 0%o\n", f.Path, inodeMode(f.Mode))
		fmt.Fprintf(&cmds, "sif %s uid %d\n", f.Path, f.UID)
		fmt.Fprintf(&cmds, "sif %s gid %d\n", f.Path, f.GID)
	}
	cmdFile := filepath.Join(tmp, "commands")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o600); err != nil {
		return err
	}
	out, err := run(ctx, debugfs, "-w", "-f", cmdFile, disk)
	if err != nil {
		return err
	}

	// Read back what was written.
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	got, _, err := debugfsStats(ctx, debugfs, tmp, disk, paths)
	if err != nil {
		return err
	}
	for _, f := range files {
		st, ok := got[f.Path]
		if !ok {
			return fmt.Errorf("%s was not written (debugfs: %s)", f.Path, lastLines(out, 10))
		}
		if err := st.check(f); err != nil {
			return fmt.Errorf("%s: %w (debugfs: %s)", f.Path, err, lastLines(out, 10))
		}
	}
	return nil
}

// debugfsStats runs debugfs's stat (read-only) on each path and returns the
// inodes found; a missing path is absent from the map.
func debugfsStats(ctx context.Context, debugfs, tmp, disk string, paths []string) (map[string]inodeStat, []byte, error) {
	var cmds strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&cmds, "stat %s\n", p)
	}
	f, err := os.CreateTemp(tmp, "stat-*")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(cmds.String()); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := f.Close(); err != nil {
		return nil, nil, err
	}
	out, err := run(ctx, debugfs, "-f", f.Name(), disk)
	if err != nil {
		return nil, out, err
	}
	// debugfs exits 0 even when it cannot open the image.
	if bytes.Contains(out, []byte("while trying to open")) || bytes.Contains(out, []byte("while opening filesystem")) {
		return nil, out, fmt.Errorf("debugfs cannot open the image: %s", lastLines(out, 5))
	}
	return parseStats(string(out)), out, nil
}

// checkDebugfsPath refuses a path that a debugfs command file could not
// carry as exactly one argument of one command: debugfs reads its commands
// a line at a time, splits them on white space and quotes, and runs a line
// starting with "!" through the shell. So: absolute and clean, no control
// character (a newline would start a new command), no white space, quote or
// backslash, and within ext4's limits (255 bytes a name, 4000 in all).
func checkDebugfsPath(p string) error {
	q := tarlimit.Name(p)
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("path %s must be absolute and clean, and not /", q)
	}
	if len(p) > 4000 {
		return fmt.Errorf("path %s is longer than 4000 bytes", q)
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f || strings.IndexByte(" \"'\\", c) >= 0 {
			return fmt.Errorf("path %s holds a control character, white space, a quote or a backslash, which debugfs cannot be given safely", q)
		}
	}
	for _, el := range strings.Split(p[1:], "/") {
		if len(el) > 255 {
			return fmt.Errorf("path %s has a name longer than 255 bytes", q)
		}
	}
	return nil
}

// inodeMode converts an os.FileMode to the ext4 i_mode value (type and
// permission bits).
func inodeMode(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		v |= 0o1000
	}
	if m.IsDir() {
		return v | 0o040000
	}
	return v | 0o100000
}

// inodeStat is what debugfs's stat shows of one inode.
type inodeStat struct {
	typ      string // "regular", "directory", ...
	mode     uint32 // permission and special bits, without the type
	uid, gid int
	size     int64
	// major and minor are a device node's numbers.
	major, minor int64
}

func (s inodeStat) check(f File) error {
	wantType := "regular"
	if f.Mode.IsDir() {
		wantType = "directory"
	}
	if s.typ != wantType {
		return fmt.Errorf("is a %s, want a %s", s.typ, wantType)
	}
	if want := inodeMode(f.Mode) & 0o7777; s.mode != want {
		return fmt.Errorf("mode is %04o, want %04o", s.mode, want)
	}
	if s.uid != f.UID || s.gid != f.GID {
		return fmt.Errorf("owner is %d:%d, want %d:%d", s.uid, s.gid, f.UID, f.GID)
	}
	if !f.Mode.IsDir() && s.size != int64(len(f.Data)) {
		return fmt.Errorf("size is %d, want %d", s.size, len(f.Data))
	}
	return nil
}

var (
	statTypeMode = regexp.MustCompile(`Type:\s+(.+?)\s+Mode:\s+([0-7]+)`)
	statOwner    = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	statSize     = regexp.MustCompile(`\bSize:\s+(\d+)`)
	statDevice   = regexp.MustCompile(`Device major/minor number:\s+(\d+):(\d+)`)
)

// parseStats parses the output of `debugfs -f FILE` where FILE holds
// "stat PATH" lines; debugfs echoes each command as "debugfs: stat PATH".
func parseStats(out string) map[string]inodeStat {
	res := map[string]inodeStat{}
	for _, sec := range strings.Split(out, "debugfs: stat ")[1:] {
		p, body, _ := strings.Cut(sec, "\n")
		p = strings.TrimSpace(p)
		tm := statTypeMode.FindStringSubmatch(body)
		ow := statOwner.FindStringSubmatch(body)
		sz := statSize.FindStringSubmatch(body)
		if tm == nil || ow == nil || sz == nil {
			continue // not found, or not a format we know
		}
		mode, _ := strconv.ParseUint(tm[2], 8, 32)
		uid, _ := strconv.Atoi(ow[1])
		gid, _ := strconv.Atoi(ow[2])
		size, _ := strconv.ParseInt(sz[1], 10, 64)
		st := inodeStat{typ: tm[1], mode: uint32(mode), uid: uid, gid: gid, size: size}
		if dm := statDevice.FindStringSubmatch(body); dm != nil {
			st.major, _ = strconv.ParseInt(dm[1], 10, 64)
			st.minor, _ = strconv.ParseInt(dm[2], 10, 64)
		}
		res[p] = st
	}
	return res
}
