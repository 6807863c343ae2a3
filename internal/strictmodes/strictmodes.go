// Package strictmodes checks that files a root bangerd executes or trusts
// (the runtime bundle, its lock file, VMM binaries) cannot be changed by a
// user other than root, as sshd's StrictModes does for authorized_keys: the
// file, every file and folder below it, and every folder above it up to /
// must be owned by root and writable by nobody else.
//
// A folder above may be world-writable only when it is root's and sticky
// (/tmp): there no other user can rename or remove what root put in it.
// Symbolic links are checked where they stand and followed: the folders
// above their targets are checked too.
package strictmodes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Problem is one path a user other than the trusted owner can change.
type Problem struct {
	Path string
	// Why says what is wrong: "owned by uid 1000", "group-writable (mode 0775)".
	Why string
	// Fix is the command that fixes it.
	Fix string
}

func (p Problem) String() string { return p.Path + " is " + p.Why }

// Error is the error of Check and CheckTree: every problem found (at most
// MaxListed are listed) and the commands that fix them.
type Error struct {
	// What names what was checked ("runtime bundle", "qemu binary").
	What     string
	Problems []Problem
}

// MaxListed bounds how many problems an Error lists.
const MaxListed = 5

// Error names the paths, why each is unsafe and how to fix them all.
func (e *Error) Error() string {
	return e.What + ": " + e.Detail() + "; fix: " + e.Fix()
}

// Detail states the rule and lists the problems (at most MaxListed).
func (e *Error) Detail() string {
	var lines []string
	for i, p := range e.Problems {
		if i == MaxListed {
			lines = append(lines, fmt.Sprintf("and %d more", len(e.Problems)-MaxListed))
			break
		}
		lines = append(lines, p.String())
	}
	return "a root bangerd refuses files that a user other than root can change (like sshd's StrictModes): " + strings.Join(lines, "; ")
}

// Fix is the commands that fix every problem, joined by " && ".
func (e *Error) Fix() string {
	var fixes []string
	seen := map[string]bool{}
	for _, p := range e.Problems {
		if !seen[p.Fix] {
			seen[p.Fix] = true
			fixes = append(fixes, p.Fix)
		}
	}
	return strings.Join(fixes, " && ")
}

// Check checks the file or folder p and every folder above it (see the
// package comment); trusted is the uid that may own them (0 in bangerd;
// tests pass their own). It returns nil or an *Error naming what.
func Check(what, p string, trusted int) error {
	return result(what, checkPath(p, trusted, false))
}

// CheckTree is Check for the folder dir plus everything below it.
func CheckTree(what, dir string, trusted int) error {
	probs := checkPath(dir, trusted, true)
	if len(probs) > 0 {
		return result(what, probs)
	}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if pr, ok := judge(p, fi, trusted, false); !ok {
			pr.Fix = treeFix(dir, trusted)
			probs = append(probs, pr)
		}
		return nil
	})
	if err != nil {
		probs = append(probs, Problem{Path: dir, Why: "unreadable: " + err.Error(), Fix: "make " + dir + " readable"})
	}
	return result(what, probs)
}

func result(what string, probs []Problem) error {
	if len(probs) == 0 {
		return nil
	}
	return &Error{What: what, Problems: probs}
}

// checkPath judges p itself and every folder above it, along the path as
// written and, when it goes through symbolic links, along the resolved
// path too.
func checkPath(p string, trusted int, isTree bool) []Problem {
	abs, err := filepath.Abs(p)
	if err != nil {
		return []Problem{{Path: p, Why: "not resolvable: " + err.Error(), Fix: "use an absolute path"}}
	}
	var probs []Problem
	seen := map[string]bool{}
	walk := func(path string) {
		for q, top := path, true; ; q, top = filepath.Dir(q), false {
			if !seen[q] {
				seen[q] = true
				fi, err := os.Lstat(q)
				switch {
				case err != nil && !errors.Is(err, fs.ErrNotExist):
					probs = append(probs, Problem{Path: q, Why: "unreadable: " + err.Error(), Fix: "make " + q + " readable by root"})
				case err == nil:
					if pr, ok := judge(q, fi, trusted, !top); !ok {
						if top && isTree {
							pr.Fix = treeFix(q, trusted)
						}
						probs = append(probs, pr)
					}
				}
			}
			if q == "/" || q == "." {
				return
			}
		}
	}
	walk(abs)
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		walk(real)
	}
	return probs
}

// judge says whether one path is safe: owned by trusted, and writable by
// nobody else. A folder above the checked path (parent) may be world- or
// group-writable when trusted owns it and it is sticky.
func judge(p string, fi fs.FileInfo, trusted int, parent bool) (Problem, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Problem{Path: p, Why: "of unknown ownership", Fix: "chown " + ownerArg(trusted) + " " + p}, false
	}
	if int(st.Uid) != trusted {
		return Problem{Path: p, Why: fmt.Sprintf("owned by uid %d, not %s", st.Uid, owner(trusted)),
			Fix: "chown " + ownerArg(trusted) + " " + p}, false
	}
	mode := fi.Mode()
	if mode.Type() == fs.ModeSymlink || mode.Perm()&0o022 == 0 {
		return Problem{}, true
	}
	if parent && mode.IsDir() && mode&fs.ModeSticky != 0 {
		return Problem{}, true
	}
	who := "group-writable"
	switch {
	case mode.Perm()&0o022 == 0o022:
		who = "group- and world-writable"
	case mode.Perm()&0o002 != 0:
		who = "world-writable"
	}
	return Problem{Path: p, Why: fmt.Sprintf("%s (mode %04o)", who, mode.Perm()), Fix: "chmod go-w " + p}, false
}

// treeFix fixes every path below dir at once.
func treeFix(dir string, trusted int) string {
	return fmt.Sprintf("chown -R %s %s && chmod -R go-w %s", ownerArg(trusted), dir, dir)
}

// owner names uid in words, ownerArg as chown takes it.
func owner(uid int) string {
	if uid == 0 {
		return "root"
	}
	return fmt.Sprintf("uid %d", uid)
}

func ownerArg(uid int) string {
	if uid == 0 {
		return "root"
	}
	return fmt.Sprint(uid)
}
