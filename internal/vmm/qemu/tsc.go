package qemu

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Why a TSC hint: under TCG the guest's TSC is the host's TSC, but a microvm
// has neither HPET nor an ACPI PM timer, so the guest kernel can calibrate
// the TSC only against the emulated PIT. That calibration is timing
// sensitive and fails when the emulated vCPU is slow or descheduled (often
// on a loaded 2-core host: 4 of 5 boots under load); the kernel then marks
// the TSC unstable and hangs early in boot ("tsc: Unable to calibrate
// against PIT"). tsc_early_khz= gives it the frequency and avoids the hang.
//
// Why tsc=reliable: even then the kernel marks the TSC unstable ("TSCs
// unsynchronized": its cross-CPU check fails on emulated vCPUs) and falls
// back to jiffies, which lose ticks whenever the host is busy: the guest
// clock fell behind by about 1 % of wall time on a loaded host. Under TCG
// every vCPU reads the host's own TSC, so when the host's TSC is constant
// and does not stop (constant_tsc, nonstop_tsc) the guest's is as good as
// the host's; tsc=reliable tells the kernel so, and it keeps the TSC as
// its clock source.

const tscHintParam = "tsc_early_khz="

var hostTSC struct {
	once     sync.Once
	khz      uint64
	reliable bool // constant_tsc and nonstop_tsc
	err      error
}

// hostTSCKHz returns the host TSC frequency in kHz, measured once per
// process against the monotonic clock (median of 3 × 20 ms).
func hostTSCKHz() (uint64, error) {
	hostTSC.once.Do(func() {
		hostTSC.khz, hostTSC.err = measureTSC()
		// Where /proc is not mounted (the Firecracker simulator in its
		// jail) CPUID says it: without tsc=reliable a guest under load
		// may find its TSC "unstable" and keep time by jiffies, which
		// falls seconds behind while its vCPU waits (measured: clones on
		// the simulator 1-2 s behind within seconds of their start).
		b, err := os.ReadFile("/proc/cpuinfo")
		hostTSC.reliable = hostTSC.err == nil && (strings.Contains(string(b), " nonstop_tsc") || (err != nil && invariantTSC()))
	})
	return hostTSC.khz, hostTSC.err
}

// tscArgs are the kernel arguments for a TCG guest (see above): the TSC
// frequency, and tsc=reliable when the host's TSC is constant and
// nonstop; empty when the host's TSC could not be measured.
func tscArgs() string {
	khz, err := hostTSCKHz()
	if err != nil || khz == 0 {
		return ""
	}
	args := tscHintParam + strconv.FormatUint(khz, 10)
	if hostTSC.reliable {
		args += " " + tscReliableParam
	}
	return args
}

const tscReliableParam = "tsc=reliable"

func measureTSC() (uint64, error) {
	if !haveTSC {
		return 0, errors.New("no TSC on this architecture")
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil && !strings.Contains(string(b), " constant_tsc") {
		return 0, errors.New("host TSC is not constant-rate (no constant_tsc flag)")
	}
	var samples []uint64
	for range 3 {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(20 * time.Millisecond)
		t1, c1 := time.Now(), rdtsc()
		ns := t1.Sub(t0).Nanoseconds()
		if ns <= 0 || c1 <= c0 {
			return 0, errors.New("TSC did not advance")
		}
		samples = append(samples, (c1-c0)*1_000_000/uint64(ns))
	}
	slices.Sort(samples)
	return samples[1], nil
}

// withTSCHint returns kernel args with extra (tscArgs) appended, unless
// args already set tsc_early_khz or extra is empty.
func withTSCHint(args string, extra string) string {
	if extra == "" || strings.Contains(" "+args, " "+tscHintParam) {
		return args
	}
	if args != "" && !strings.HasSuffix(args, " ") {
		args += " "
	}
	return args + extra
}

// TCGKernelArgs returns kernel args with the TSC hint a TCG guest needs
// (see above) appended, unless args already carry one or the host's TSC
// could not be measured. The Firecracker simulator, which boots its guests
// under TCG, uses it too.
func TCGKernelArgs(args string) string { return withTSCHint(args, tscArgs()) }
