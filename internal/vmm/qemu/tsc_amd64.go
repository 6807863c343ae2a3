package qemu

// rdtsc reads the time stamp counter (serialized with LFENCE).
func rdtsc() uint64

// cpuid executes CPUID with EAX=leaf, ECX=sub.
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// invariantTSC reports whether CPUID says the TSC is invariant (leaf
// 0x80000007, EDX bit 8): constant rate and running in every C- and
// P-state, which is what Linux calls constant_tsc and nonstop_tsc.
func invariantTSC() bool {
	if max, _, _, _ := cpuid(0x80000000, 0); max < 0x80000007 {
		return false
	}
	_, _, _, d := cpuid(0x80000007, 0)
	return d&(1<<8) != 0
}

const haveTSC = true
