package bundle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/bangerhq/banger/internal/filestamp"
)

// ErrMismatch is wrapped by verification errors for a file whose contents,
// size or mode differ from the lock, or an unexpected file in the bundle.
var ErrMismatch = errors.New("runtime bundle does not match its lock")

// Component states in a Report.
const (
	StatePresent = "present" // every file matches the lock
	StateMissing = "missing" // not in the lock, or files are missing
	StateWrong   = "wrong"   // files differ from the lock
)

// Problem is one file that does not verify.
type Problem struct {
	Component string // "" for an unexpected file outside every component
	File      string // relative to the bundle directory, slash-separated
	Reason    string // "missing", "content changed", "truncated", "unexpected executable", ...
	Expected  string // SHA-256 from the lock ("" for unexpected files)
	Actual    string // SHA-256 on disk ("" when missing)
	Fix       string // the command that fixes it
	missing   bool
}

func (p Problem) String() string {
	s := p.File + ": " + p.Reason
	if p.Expected != "" || p.Actual != "" {
		exp, act := p.Expected, p.Actual
		if exp == "" {
			exp = "(none: not in the lock)"
		}
		if act == "" {
			act = "(none)"
		}
		s += fmt.Sprintf("; expected SHA-256 %s, actual %s", exp, act)
	}
	if p.Component != "" {
		s = "component " + p.Component + ": " + s
	}
	return s
}

// ComponentReport is one component's state.
type ComponentReport struct {
	Name     string
	State    string // StatePresent, StateMissing or StateWrong
	Optional bool
	// Lock is the component's lock entry (nil when not locked).
	Lock     *LockComponent
	Problems []Problem
}

// Report is what Inspect found in a bundle directory.
type Report struct {
	Dir Dir
	// Lock is the bundle's lock; nil when it could not be read (LockErr).
	Lock       *Lock
	LockErr    error
	Components []ComponentReport
	// Extra lists unexpected files (Component is "").
	Extra []Problem
}

// OK reports whether the bundle verifies.
func (r *Report) OK() bool {
	if r.LockErr != nil || len(r.Extra) > 0 {
		return false
	}
	for _, c := range r.Components {
		if len(c.Problems) > 0 {
			return false
		}
	}
	return true
}

// Err returns nil when the bundle verifies, otherwise an error wrapping
// ErrMissing or ErrMismatch that names every problem (component, file,
// expected and actual SHA-256), the directory and how it was found, where
// else was searched and the commands that fix it.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	where := r.Dir.Path
	if r.Dir.How != "" {
		where += " (found via " + r.Dir.How + ")"
	}
	if len(r.Dir.Searched) > 1 {
		where += "; searched " + strings.Join(r.Dir.Searched, ", ")
	}
	if r.LockErr != nil {
		sentinel := ErrMismatch
		if errors.Is(r.LockErr, fs.ErrNotExist) {
			sentinel = ErrMissing
		}
		return fmt.Errorf("%w: runtime bundle %s has no readable %s (%v): run `make runtime` in the banger checkout, or `banger runtime install BUNDLE.tar.gz`",
			sentinel, where, LockName, r.LockErr)
	}
	var lines, fixes []string
	seenFix := map[string]bool{}
	sentinel := ErrMissing
	add := func(p Problem) {
		lines = append(lines, "  "+p.String())
		if !p.missing {
			sentinel = ErrMismatch
		}
		if p.Fix != "" && !seenFix[p.Fix] {
			seenFix[p.Fix] = true
			fixes = append(fixes, "`"+p.Fix+"`")
		}
	}
	for _, c := range r.Components {
		for _, p := range c.Problems {
			add(p)
		}
	}
	for _, p := range r.Extra {
		add(p)
	}
	return fmt.Errorf("%w: runtime bundle %s:\n%s\nto fix: run %s", sentinel, where, strings.Join(lines, "\n"), strings.Join(fixes, ", then "))
}

// InspectOptions tunes Inspect.
type InspectOptions struct {
	// NoCache hashes every file even when the process's stamp cache says
	// it is unchanged since it last verified, and reads the lock again.
	NoCache bool
	// VMStart limits the inspection to what a VM start reads: the
	// kernel's module tree (which images copy when they are built) is not
	// checked, nor is the bundle searched for files its lock does not
	// name. The other components' files are checked as always.
	VMStart bool
}

// Verify checks the bundle in d against its lock: every locked file present
// with the recorded SHA-256, size and mode, every required component locked,
// and no unexpected file inside a component's directory or unexpected
// executable anywhere in the bundle. It returns nil or Report.Err's error.
//
// Verify is meant for preflight (doctor's VerifyRuntime): files whose size,
// mtime, ctime, inode and device are unchanged since they last verified in
// this process are not hashed again. ctime cannot be set back by a user, so
// any write to a file is noticed; a long-running bangerd hashes the ~150 MB
// bundle once (a few hundred ms, in parallel) and then only stats it. The
// cache lives in memory only: nothing is written beside the bundle, which
// may be read-only (PREFIX/lib/banger).
func Verify(ctx context.Context, d Dir) error {
	r, err := Inspect(ctx, d, InspectOptions{})
	if err != nil {
		return err
	}
	return r.Err()
}

// VerifyVMStart is Verify for a VM start's preflight: it checks what a VM
// start reads (see InspectOptions.VMStart), a few files, where Verify
// looks at all of the bundle's (about 1,100, most of them kernel modules:
// 20 ms of every vm create).
func VerifyVMStart(ctx context.Context, d Dir) error {
	r, err := Inspect(ctx, d, InspectOptions{VMStart: true})
	if err != nil {
		return err
	}
	return r.Err()
}

// modulesPrefix is where the kernel's module tree lies in a bundle.
const modulesPrefix = "kernel/modules/"

// lockCache keeps the lock Inspect last parsed, with its file's stamp
// (the lock of a bundle with all its modules is some 300 KB of TOML,
// 5-7 ms to parse).
var lockCache struct {
	sync.Mutex
	path  string
	stamp filestamp.Stamp
	lock  *Lock
}

// readLockCached is ReadLock, parsing the file again only when its stamp
// changed. The lock it returns is shared: it must not be modified.
func readLockCached(dir string) (*Lock, error) {
	p := filepath.Join(dir, LockName)
	st, err := filestamp.Path(p)
	if err != nil {
		return ReadLock(dir) // its error names the file
	}
	lockCache.Lock()
	defer lockCache.Unlock()
	if lockCache.lock != nil && lockCache.path == p && lockCache.stamp == st {
		return lockCache.lock, nil
	}
	l, err := ReadLock(dir)
	if err != nil {
		return nil, err
	}
	if now, err := filestamp.Path(p); err == nil && now == st {
		lockCache.path, lockCache.stamp, lockCache.lock = p, st, l
	}
	return l, nil
}

// Inspect examines the bundle in d and reports each component's state. The
// error is non-nil only when the inspection itself fails (context
// cancelled); problems with the bundle are in the Report.
func Inspect(ctx context.Context, d Dir, opt InspectOptions) (*Report, error) {
	r := &Report{Dir: d}
	if st, err := os.Stat(d.Path); err != nil || !st.IsDir() {
		if err == nil {
			err = fmt.Errorf("%s is not a directory", d.Path)
		}
		r.LockErr = err
		return r, nil
	}
	read := readLockCached
	if opt.NoCache {
		read = ReadLock
	}
	l, err := read(d.Path)
	if err != nil {
		r.LockErr = err
		return r, nil
	}
	r.Lock = l

	type job struct {
		comp int
		f    LockFile
		fix  string
	}
	var jobs []job
	checked := map[string]int{} // component -> files checked
	locked := map[string]bool{LockName: true, ManifestName: true}
	compDirs := map[string]string{} // top-level directory -> component
	names := map[string]bool{}
	for n := range l.Components {
		names[n] = true
	}
	for _, n := range KnownComponents {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	index := map[string]int{}
	for _, n := range sorted {
		c := l.Components[n]
		index[n] = len(r.Components)
		if c == nil {
			k := known[n]
			cr := ComponentReport{Name: n, State: StateMissing, Optional: k.optional}
			if !k.optional {
				cr.Problems = []Problem{{Component: n, File: k.dir + "/", Reason: "component not in " + LockName, Fix: k.fix, missing: true}}
			}
			r.Components = append(r.Components, cr)
			continue
		}
		r.Components = append(r.Components, ComponentReport{Name: n, State: StatePresent, Optional: c.Optional, Lock: c})
		for _, f := range c.Files {
			locked[f.Path] = true
			if top, _, ok := strings.Cut(f.Path, "/"); ok {
				compDirs[top] = n
			}
			if opt.VMStart && strings.HasPrefix(f.Path, modulesPrefix) {
				continue
			}
			checked[n]++
			jobs = append(jobs, job{comp: index[n], f: f, fix: c.Fix})
		}
	}

	// Hash in parallel: the kernel module tree is a thousand files.
	results := make([]*Problem, len(jobs))
	var wg sync.WaitGroup
	next := make(chan int)
	workers := min(runtime.NumCPU(), 8)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = checkFile(d.Path, jobs[i].f, opt.NoCache)
			}
		}()
	}
feed:
	for i := range jobs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("verify runtime bundle %s: %w", d.Path, err)
	}
	for i, p := range results {
		if p == nil {
			continue
		}
		c := &r.Components[jobs[i].comp]
		p.Component = c.Name
		p.Fix = jobs[i].fix
		c.Problems = append(c.Problems, *p)
		c.State = StateWrong
	}
	for i := range r.Components {
		c := &r.Components[i]
		if c.Lock == nil {
			continue
		}
		all := len(c.Problems) == checked[c.Name] && len(c.Problems) > 0
		for _, p := range c.Problems {
			all = all && p.missing
		}
		if all {
			c.State = StateMissing
		}
	}

	if opt.VMStart {
		return r, nil
	}
	extra, err := findExtra(d.Path, locked, compDirs, l)
	if err != nil {
		return nil, fmt.Errorf("verify runtime bundle %s: %w", d.Path, err)
	}
	for _, p := range extra {
		if p.Component != "" {
			c := &r.Components[index[p.Component]]
			c.Problems = append(c.Problems, p)
			c.State = StateWrong
		} else {
			r.Extra = append(r.Extra, p)
		}
	}
	return r, nil
}

// checkFile returns nil when f verifies, otherwise the problem. The stamp,
// mode and hash all come from one descriptor opened without following a
// symbolic link.
func checkFile(dir string, f LockFile, noCache bool) *Problem {
	p := filepath.Join(dir, filepath.FromSlash(f.Path))
	fh, st, err := openRegular(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Problem{File: f.Path, Reason: "missing", Expected: f.SHA256, missing: true}
		}
		if lst, lerr := os.Lstat(p); lerr == nil && !lst.Mode().IsRegular() {
			return &Problem{File: f.Path, Reason: "not a regular file (" + lst.Mode().Type().String() + ")", Expected: f.SHA256}
		}
		return &Problem{File: f.Path, Reason: err.Error(), Expected: f.SHA256}
	}
	defer fh.Close()
	stamp := filestamp.Of(st)
	if !noCache {
		if v, ok := stampCache.Load(p); ok && v.(stampEntry) == (stampEntry{stamp, f.SHA256}) {
			return checkMode(f, st)
		}
	}
	sum, err := hashOpen(fh)
	if err != nil {
		return &Problem{File: f.Path, Reason: err.Error(), Expected: f.SHA256}
	}
	if sum != f.SHA256 {
		reason := "content changed"
		switch {
		case st.Size() < f.Size:
			reason = fmt.Sprintf("truncated (%d bytes, expected %d)", st.Size(), f.Size)
		case st.Size() > f.Size:
			reason = fmt.Sprintf("grew (%d bytes, expected %d)", st.Size(), f.Size)
		}
		stampCache.Delete(p)
		return &Problem{File: f.Path, Reason: reason, Expected: f.SHA256, Actual: sum}
	}
	stampCache.Store(p, stampEntry{stamp, sum})
	return checkMode(f, st)
}

func checkMode(f LockFile, st os.FileInfo) *Problem {
	if f.Mode != "" && st.Mode().Perm() != f.perm() {
		return &Problem{File: f.Path, Reason: fmt.Sprintf("mode %04o, expected %s", st.Mode().Perm(), f.Mode)}
	}
	return nil
}

// stampCache maps an absolute path to the stamp and SHA-256 it last
// verified with.
var stampCache sync.Map

type stampEntry struct {
	st  filestamp.Stamp
	sum string
}

// findExtra walks the bundle for files the lock does not list: any file in
// a component's directory, and any executable elsewhere. Temporary
// directories of an ongoing build or install (.kernel-build.*, .banger-*)
// are skipped.
func findExtra(dir string, locked map[string]bool, compDirs map[string]string, l *Lock) ([]Problem, error) {
	// Component directories of known components that are not locked (an
	// optional component that was never fetched) still own their directory:
	// a firecracker/firecracker dropped in by hand is refused.
	for _, n := range KnownComponents {
		if _, ok := l.Components[n]; !ok {
			if top := known[n].dir; top != "" {
				if _, taken := compDirs[top]; !taken {
					compDirs[top] = ""
				}
			}
		}
	}
	var out []Problem
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if !strings.Contains(rel, "/") && (strings.HasPrefix(rel, ".kernel-build.") || strings.HasPrefix(rel, ".banger-") || strings.HasPrefix(rel, "."+LockName+".tmp")) {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() || locked[rel] {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		top, _, inDir := strings.Cut(rel, "/")
		comp, owned := compDirs[top]
		exe := info.Mode().Perm()&0o111 != 0 && !info.IsDir()
		sum := ""
		if info.Mode().IsRegular() {
			sum, _ = hashPath(p)
		}
		switch {
		case inDir && owned:
			reason := "unexpected file (not in " + LockName + ")"
			if exe {
				reason = "unexpected executable (not in " + LockName + ")"
			}
			if comp == "" {
				reason += " in the directory of component " + top + ", which this bundle does not hold"
			}
			out = append(out, Problem{Component: comp, File: rel, Reason: reason, Actual: sum, Fix: "rm " + p})
		case exe || !info.Mode().IsRegular():
			reason := "unexpected executable (not in " + LockName + ")"
			if !info.Mode().IsRegular() {
				reason = "unexpected " + info.Mode().Type().String() + " (not in " + LockName + ")"
			}
			out = append(out, Problem{File: rel, Reason: reason, Actual: sum, Fix: "rm " + p})
		}
		return nil
	})
	return out, err
}

// known describes each of KnownComponents for bundles whose lock lacks it.
var known = map[string]struct {
	dir, fix string
	optional bool
}{
	"firecracker": {dir: "firecracker", fix: "banger runtime fetch firecracker", optional: true},
	"kernel":      {dir: "kernel", fix: "make runtime"},
	"agent":       {dir: "agent", fix: "make agent"},
}
