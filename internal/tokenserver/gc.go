package tokenserver

import (
	"math"
	"os"
	"runtime/debug"
)

// HeadroomGCPercent is the garbage collector's target (GOGC) when a memory limit bounds the
// heap and no GOGC is set. The token server's garbage is short-lived request data, while each
// collection marks the whole client cache: at 10,000 clients, the default of 100 spent about
// 12% of the CPU under load collecting (docs/benchmarks.md). Twice the headroom halves the
// collections, and the soft limit still keeps the heap under the container's limit.
const HeadroomGCPercent = 200

// GCPercent decides the garbage collector's target: gogc, when set, is the administrator's
// choice and wins; without a memory limit (memoryLimit math.MaxInt64, the runtime's "none"),
// nothing bounds a larger heap, so the runtime's default stays; otherwise HeadroomGCPercent.
// It returns ok false when the runtime's setting should be left as it is.
func GCPercent(gogc string, memoryLimit int64) (percent int, ok bool) {
	if gogc != "" || memoryLimit == math.MaxInt64 {
		return 0, false
	}
	return HeadroomGCPercent, true
}

// SetGCPercent applies GCPercent to this process, after its memory limit is set, and returns the
// target it set (0 when it left the runtime's).
func SetGCPercent() int {
	percent, ok := GCPercent(os.Getenv("GOGC"), debug.SetMemoryLimit(-1))
	if !ok {
		return 0
	}
	debug.SetGCPercent(percent)
	return percent
}
