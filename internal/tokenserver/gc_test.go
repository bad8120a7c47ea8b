package tokenserver

import (
	"math"
	"testing"
)

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		gogc        string
		memoryLimit int64
		want        int
		wantSet     bool
	}{
		{"a memory limit and no GOGC give the collector twice the default headroom", "", 230 << 20, HeadroomGCPercent, true},
		{"without a memory limit the runtime's default stays, since nothing would bound the heap", "", math.MaxInt64, 0, false},
		{"an administrator's GOGC wins over the limit", "100", 230 << 20, 0, false},
		{"an administrator's GOGC=off wins too", "off", 230 << 20, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, set := GCPercent(tc.gogc, tc.memoryLimit)
			if got != tc.want || set != tc.wantSet {
				t.Errorf("GCPercent(%q, %d) = %d, %v; want %d, %v", tc.gogc, tc.memoryLimit, got, set, tc.want, tc.wantSet)
			}
		})
	}
}
