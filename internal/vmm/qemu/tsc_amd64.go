package qemu

// rdtsc reads the time stamp counter (serialized with LFENCE).
func rdtsc() uint64

const haveTSC = true
