// Package doctor holds banger's host checks. The same checks back two
// callers: `banger doctor`, which runs them all and prints every finding, and
// the daemon's preflight, which runs the ones that concern an operation
// (vm create/start, image build, a Firecracker VM) before starting it, so
// the operation stops early with the same words and the same fix that
// `banger doctor` would print.
//
// A check looks at the host through an Env, whose paths (runtime bundle,
// XDG dirs, $PATH, device nodes, /proc files) tests point at files of their
// own.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Status is the outcome of one check.
type Status string

// The statuses, from best to worst (StatusSkip is outside that order: the
// check had nothing to look at, or depended on something that failed).
const (
	// StatusOK: the host is fine for this check.
	StatusOK Status = "ok"
	// StatusWarn: banger works, but worse than it could (TCG instead of
	// KVM, QEMU instead of Firecracker) or something is worth fixing soon.
	StatusWarn Status = "warn"
	// StatusFail: something banger needs is missing or broken.
	StatusFail Status = "fail"
	// StatusSkip: the check did not run (nothing to check, or it depends
	// on another check that did not pass); Detail says why.
	StatusSkip Status = "skip"
)

// Purpose names an operation whose preflight runs a subset of the checks.
// A check lists the purposes it concerns (Check.Concerns, Check.Strict).
type Purpose string

// The purposes the daemon runs preflight for.
const (
	// PurposeVMStart is creating or starting a VM with any VMM: the
	// runtime kernel, networking (TUN, CAP_NET_ADMIN), ssh and disk space.
	// Checks for QEMU also concern it, since QEMU is the driver the daemon
	// uses when it does not use Firecracker.
	PurposeVMStart Purpose = "vm-start"
	// PurposeImageBuild is `banger image build`: the image-build tools,
	// the runtime kernel's modules and disk space.
	PurposeImageBuild Purpose = "image-build"
	// PurposeFirecracker is creating or starting a VM under Firecracker. It
	// includes what every VM start needs (the checks that concern
	// PurposeVMStart and are not QEMU-specific also list it) plus the
	// firecracker binary and a KVM that can run guests, which for this
	// purpose have no fallback.
	PurposeFirecracker Purpose = "firecracker"
)

// Purposes lists every Purpose, in a stable order.
func Purposes() []Purpose {
	return []Purpose{PurposeVMStart, PurposeImageBuild, PurposeFirecracker}
}

// action is how an error message names the operation that was refused.
func (p Purpose) action() string {
	switch p {
	case PurposeVMStart:
		return "start a VM"
	case PurposeImageBuild:
		return "build an image"
	case PurposeFirecracker:
		return "start a VM under Firecracker"
	}
	return string(p)
}

// Result is what one check found.
type Result struct {
	// Status is the outcome.
	Status Status
	// Detail says what was found, in words: what is present and where,
	// or what is missing and what banger does about it.
	Detail string
	// Fix is the exact command, or the action, that fixes a warning or a
	// failure; empty when there is nothing to fix. It may hold several
	// lines, one per thing to fix.
	Fix string
}

// Check is one host check.
type Check struct {
	// ID is short, stable and unique: it appears in `banger doctor --json`
	// and in preflight errors, and Filter.IDs selects by it.
	ID string
	// Title is a few words for humans.
	Title string
	// Concerns lists the purposes whose preflight runs this check; a
	// StatusFail then blocks the operation.
	Concerns []Purpose
	// Strict lists purposes for which a StatusWarn blocks as well. A check
	// warns where banger has a fallback (QEMU for a missing Firecracker,
	// TCG for a KVM that cannot run guests); these purposes have none. A
	// purpose listed here is concerned whether or not Concerns repeats it.
	Strict []Purpose
	// Run performs the check. It must honour ctx, must not modify env,
	// and must be safe to run concurrently with the other checks.
	Run func(ctx context.Context, env *Env) Result
}

// concerns reports whether p's preflight runs c.
func (c Check) concerns(p Purpose) bool {
	return slices.Contains(c.Concerns, p) || slices.Contains(c.Strict, p)
}

// Blocks reports whether result r of c stops an operation of purpose p: a
// failure of a check that concerns p, or a warning of a check strict
// about p.
func (c Check) Blocks(p Purpose, r Result) bool {
	switch r.Status {
	case StatusFail:
		return c.concerns(p)
	case StatusWarn:
		return slices.Contains(c.Strict, p)
	}
	return false
}

// Finding is one check's result as reported, and its JSON form in
// `banger doctor --json`.
type Finding struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Summary counts findings by status. Status is the worst status found
// (fail, then warn, then ok; skips do not count), or ok when there is none.
type Summary struct {
	OK     int    `json:"ok"`
	Warn   int    `json:"warn"`
	Fail   int    `json:"fail"`
	Skip   int    `json:"skip"`
	Status Status `json:"status"`
}

// Report is the outcome of Run: the findings in check order and a summary.
type Report struct {
	Checks  []Finding `json:"checks"`
	Summary Summary   `json:"summary"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool { return r.Summary.Fail > 0 }

// Filter selects checks for Run. The zero Filter selects every check.
type Filter struct {
	// Purpose, when set, keeps only the checks that concern it (see
	// Check.Concerns and Check.Strict).
	Purpose Purpose
	// IDs, when non-empty, keeps only the checks with these IDs.
	IDs []string
}

func (f Filter) keep(c Check) bool {
	if f.Purpose != "" && !c.concerns(f.Purpose) {
		return false
	}
	return len(f.IDs) == 0 || slices.Contains(f.IDs, c.ID)
}

// Run runs the checks from Checks that f selects, concurrently, and reports
// their findings in Checks' order. It always reports every selected check:
// a check that ctx interrupts reports what it found with the interruption
// noted, and a check that panics is reported as a failure of that check
// rather than taking the caller down. Run may boot a KVM probe VM when
// env.ProbeKVM is set (see Env); it does not modify env.
func Run(ctx context.Context, env *Env, f Filter) Report {
	var rep Report
	for _, o := range runChecks(ctx, env, f) {
		rep.Checks = append(rep.Checks, Finding{ID: o.check.ID, Title: o.check.Title,
			Status: o.result.Status, Detail: o.result.Detail, Fix: o.result.Fix})
		switch o.result.Status {
		case StatusOK:
			rep.Summary.OK++
		case StatusWarn:
			rep.Summary.Warn++
		case StatusFail:
			rep.Summary.Fail++
		case StatusSkip:
			rep.Summary.Skip++
		}
	}
	if rep.Checks == nil {
		rep.Checks = []Finding{}
	}
	switch {
	case rep.Summary.Fail > 0:
		rep.Summary.Status = StatusFail
	case rep.Summary.Warn > 0:
		rep.Summary.Status = StatusWarn
	default:
		rep.Summary.Status = StatusOK
	}
	return rep
}

type outcome struct {
	check  Check
	result Result
}

func runChecks(ctx context.Context, env *Env, f Filter) []outcome {
	// Each run gets its own KVM memo: a long-lived Env (the daemon's) must
	// see the cache file as it is now, not as it was at the first run.
	e := *env
	e.kvm = &kvmMemo{}
	var out []outcome
	for _, c := range Checks() {
		if f.keep(c) {
			out = append(out, outcome{check: c})
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			out[i].result = runOne(ctx, &e, out[i].check)
		})
	}
	wg.Wait()
	return out
}

func runOne(ctx context.Context, env *Env, c Check) (r Result) {
	defer func() {
		if p := recover(); p != nil {
			r = Result{Status: StatusFail, Detail: fmt.Sprintf("check %s crashed: %v", c.ID, p),
				Fix: "report this as a banger bug"}
		}
	}()
	start := time.Now()
	r = c.Run(ctx, env)
	if r.Status == "" {
		r.Status = StatusFail
		r.Detail = "check " + c.ID + " returned no status (a banger bug)"
	}
	if err := ctx.Err(); err != nil && r.Status != StatusOK {
		r.Detail = fmt.Sprintf("%s (interrupted after %s: %v)", r.Detail, time.Since(start).Round(time.Millisecond), err)
	}
	return r
}

// ErrPreflight is wrapped by every error Preflight returns.
var ErrPreflight = errors.New("host preflight failed")

// PreflightError is Preflight's error: the purpose refused and every
// finding that blocked it, each with its fix.
type PreflightError struct {
	Purpose Purpose
	Blocked []Finding
}

// Error lists every blocking finding, one per line, each followed by its
// fix, so a user can act on all of them at once.
func (e *PreflightError) Error() string {
	var b strings.Builder
	n := "a host check"
	if len(e.Blocked) > 1 {
		n = fmt.Sprintf("%d host checks", len(e.Blocked))
	}
	fmt.Fprintf(&b, "cannot %s: %s failed (`banger doctor` shows every check):", e.Purpose.action(), n)
	for _, f := range e.Blocked {
		fmt.Fprintf(&b, "\n  - %s (%s): %s", f.Title, f.ID, f.Detail)
		if f.Fix != "" {
			for i, l := range strings.Split(f.Fix, "\n") {
				if i == 0 {
					fmt.Fprintf(&b, "\n    fix: %s", l)
				} else {
					fmt.Fprintf(&b, "\n         %s", l)
				}
			}
		}
	}
	return b.String()
}

// Unwrap returns ErrPreflight.
func (e *PreflightError) Unwrap() error { return ErrPreflight }

// Preflight runs the checks that concern purpose and returns nil, or a
// *PreflightError (wrapping ErrPreflight) listing every check that blocks
// it (see Check.Blocks) with its fix. It never boots a probe VM, whatever
// env.ProbeKVM says: whether KVM can run guests comes from the daemon's
// probe cache, and is skipped when the cache has no current answer.
// Warnings that do not block are not reported; Run(ctx, env,
// Filter{Purpose: purpose}) returns them.
func Preflight(ctx context.Context, env *Env, purpose Purpose) error {
	e := *env
	e.ProbeKVM = false
	var blocked []Finding
	for _, o := range runChecks(ctx, &e, Filter{Purpose: purpose}) {
		if o.check.Blocks(purpose, o.result) {
			blocked = append(blocked, Finding{ID: o.check.ID, Title: o.check.Title,
				Status: o.result.Status, Detail: o.result.Detail, Fix: o.result.Fix})
		}
	}
	if len(blocked) == 0 {
		return nil
	}
	return &PreflightError{Purpose: purpose, Blocked: blocked}
}
