// Package subid finds the subordinate user and group ids (/etc/subuid,
// /etc/subgid) that banger gives to what it does not trust: the user
// namespace of an image build's sandbox, and (when bangerd runs as root) the
// uid and gid each VMM process runs as.
//
// The ids come from the daemon user's own entries, as rootless container
// tools take theirs: root's entries when bangerd is root (as LXD and Incus
// do), the user's otherwise. A range is used only when it is whole, does not
// overlap the ids of an account in /etc/passwd or /etc/group, and does not
// include id 0; Check says what is wrong and the command that fixes it.
//
// Layout of the daemon's range (Start is the first id of the entry used):
//
//	Start .. Start+65535            the build sandbox: ids 0..65535 inside
//	Start+65536 .. Start+65536+N-1  VMM processes, one id per VM slot (root only)
package subid

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// SandboxSize is the number of ids mapped into a build sandbox: a whole
// 16-bit id space, so every owner an image uses keeps its number.
const SandboxSize = 65536

// VMMSlots is the number of VMM ids a root daemon reserves after the
// sandbox's: one per VM that can run at once.
const VMMSlots = 65536

// RootRangeStart is where `make deps` (and doctor's fix) puts root's range:
// far above the ids useradd hands out (100000 upward, 65536 at a time).
const RootRangeStart = 2147483648

// Range is Count consecutive host ids from Start.
type Range struct {
	Start uint32
	Count uint32
}

// End is one past the last id of r.
func (r Range) End() uint64 { return uint64(r.Start) + uint64(r.Count) }

// Contains reports whether id lies in r.
func (r Range) Contains(id uint64) bool { return id >= uint64(r.Start) && id < r.End() }

func (r Range) overlaps(o Range) bool { return uint64(r.Start) < o.End() && uint64(o.Start) < r.End() }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Start, r.End()-1) }

// Files names the files the ids are read from; tests point them elsewhere.
type Files struct {
	SubUID, SubGID string // /etc/subuid, /etc/subgid
	Passwd, Group  string // /etc/passwd, /etc/group
}

// System is the host's own files.
var System = Files{SubUID: "/etc/subuid", SubGID: "/etc/subgid", Passwd: "/etc/passwd", Group: "/etc/group"}

// IDs are the subordinate ids of one daemon user.
type IDs struct {
	// UIDs and GIDs are the ranges used, each at least Need(root) long.
	UIDs, GIDs Range
	// Root is true when the daemon runs as root and so runs VMMs as ids of
	// the range.
	Root bool
}

// Need is how many ids a daemon needs: the sandbox's, plus the VMM slots
// when it runs as root.
func Need(root bool) uint32 {
	if root {
		return SandboxSize + VMMSlots
	}
	return SandboxSize
}

// SandboxUID and SandboxGID are the host ids that id 0 inside a build
// sandbox maps to; the sandbox maps SandboxSize ids from there.
func (ids IDs) SandboxUID() uint32 { return ids.UIDs.Start }

// SandboxGID: see SandboxUID.
func (ids IDs) SandboxGID() uint32 { return ids.GIDs.Start }

// VMM returns the uid and gid a VMM in slot runs as (0 <= slot < VMMSlots).
// It is only meaningful when ids.Root.
func (ids IDs) VMM(slot int) (uid, gid uint32, err error) {
	if !ids.Root {
		return 0, 0, errors.New("vmm ids are only assigned when bangerd runs as root")
	}
	if slot < 0 || slot >= VMMSlots {
		return 0, 0, fmt.Errorf("vmm slot %d out of range 0..%d", slot, VMMSlots-1)
	}
	return ids.UIDs.Start + SandboxSize + uint32(slot), ids.GIDs.Start + SandboxSize + uint32(slot), nil
}

// Lookup returns the ids of the user with the given name and uid, read from
// files: the first entry of that user (by name or number) in each of SubUID
// and SubGID that is at least Need(uid == 0) long. The error says what is
// missing or wrong and how to fix it (see FixCommand).
func Lookup(f Files, user string, uid int) (IDs, error) {
	root := uid == 0
	need := Need(root)
	ids := IDs{Root: root}
	var errs []error
	for _, c := range []struct {
		file, what string
		dst        *Range
		accounts   string
	}{
		{f.SubUID, "subordinate uids", &ids.UIDs, f.Passwd},
		{f.SubGID, "subordinate gids", &ids.GIDs, f.Group},
	} {
		r, err := pick(c.file, user, uid, need)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.what, err))
			continue
		}
		if err := checkAccounts(c.accounts, r); err != nil {
			errs = append(errs, fmt.Errorf("%s %s in %s: %w", c.what, r, c.file, err))
			continue
		}
		*c.dst = r
	}
	if err := errors.Join(errs...); err != nil {
		return IDs{}, fmt.Errorf("%w (fix: %s)", err, FixCommand(user, uid))
	}
	return ids, nil
}

// FixCommand is the command that gives user (uid) the range banger needs.
func FixCommand(user string, uid int) string {
	who := user
	if who == "" {
		who = strconv.Itoa(uid)
	}
	start := uint64(100000)
	if uid == 0 {
		start = RootRangeStart
	}
	end := start + uint64(Need(uid == 0)) - 1
	return fmt.Sprintf("usermod --add-subuids %d-%d --add-subgids %d-%d %s", start, end, start, end, who)
}

// pick returns the first range of user in file with at least need ids.
func pick(file, user string, uid int, need uint32) (Range, error) {
	fh, err := os.Open(file)
	if err != nil {
		return Range{}, err
	}
	defer fh.Close()
	rs, err := Parse(fh, user, uid)
	if err != nil {
		return Range{}, fmt.Errorf("%s: %w", file, err)
	}
	who := user
	if who == "" {
		who = "uid " + strconv.Itoa(uid)
	}
	if len(rs) == 0 {
		return Range{}, fmt.Errorf("%s has no entry for %s", file, who)
	}
	for _, r := range rs {
		if r.Count < need {
			continue
		}
		if r.Start == 0 {
			return Range{}, fmt.Errorf("%s: the range of %s starts at id 0 (root)", file, who)
		}
		if r.End() > 1<<32-1 { // 4294967295 is (uid_t)-1
			return Range{}, fmt.Errorf("%s: the range of %s ends past the largest id", file, who)
		}
		got := Range{Start: r.Start, Count: need}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return Range{}, err
		}
		if other, name, ok := overlapOther(fh, user, uid, got); ok {
			return Range{}, fmt.Errorf("%s: the range %s of %s overlaps the range %s of %s: each user needs ids of its own", file, got, who, other, name)
		}
		return got, nil
	}
	return Range{}, fmt.Errorf("%s gives %s no range of %d ids", file, who, need)
}

// overlapOther finds an entry of another user in r that overlaps mine.
func overlapOther(r io.Reader, user string, uid int, mine Range) (Range, string, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || f[0] == user || f[0] == strconv.Itoa(uid) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if o := (Range{Start: uint32(start), Count: uint32(count)}); o.overlaps(mine) {
			return o, f[0], true
		}
	}
	return Range{}, "", false
}

// Parse returns the ranges that r (in /etc/subuid format, "name:start:count"
// per line) gives to user, by name or by the number uid, in file order.
// Malformed lines are an error.
func Parse(r io.Reader, user string, uid int) ([]Range, error) {
	var out []Range
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want name:start:count", n)
		}
		if f[0] != user && f[0] != strconv.Itoa(uid) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("line %d: start and count must be numbers", n)
		}
		out = append(out, Range{Start: uint32(start), Count: uint32(count)})
	}
	return out, sc.Err()
}

// checkAccounts fails when an account in file (/etc/passwd or /etc/group
// format: the id is the third field) has an id inside r.
func checkAccounts(file string, r Range) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err == nil && r.Contains(id) {
			return fmt.Errorf("overlaps account %q (id %d) in %s", f[0], id, file)
		}
	}
	return sc.Err()
}
