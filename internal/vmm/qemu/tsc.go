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

const tscHintParam = "tsc_early_khz="

var hostTSC struct {
	once sync.Once
	khz  uint64
	err  error
}

// hostTSCKHz returns the host TSC frequency in kHz, measured once per
// process against the monotonic clock (median of 3 × 20 ms).
func hostTSCKHz() (uint64, error) {
	hostTSC.once.Do(func() {
		hostTSC.khz, hostTSC.err = measureTSC()
	})
	return hostTSC.khz, hostTSC.err
}

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

// withTSCHint returns kernel args with tsc_early_khz=khz appended, unless
// args already set it or khz is 0.
func withTSCHint(args string, khz uint64) string {
	if khz == 0 || strings.Contains(" "+args, " "+tscHintParam) {
		return args
	}
	if args != "" && !strings.HasSuffix(args, " ") {
		args += " "
	}
	return args + tscHintParam + strconv.FormatUint(khz, 10)
}
