package tokenserverprocess

import (
	"testing"
	"time"
)

func TestStatusField(t *testing.T) {
	status := "Name:\ttoken-server\nVmHWM:\t   88412 kB\nVmRSS:\t   81240 kB\nThreads:\t9\n"
	for field, want := range map[string]int64{"VmRSS": 81240, "VmHWM": 88412, "VmSwap": 0} {
		if got := statusField(status, field); got != want {
			t.Errorf("%s: got %d, want %d", field, got, want)
		}
	}
	if got := statusField("VmRSS:\n", "VmRSS"); got != 0 {
		t.Errorf("an empty field: got %d, want 0", got)
	}
}

func TestStatCPUAddsUserAndSystemTicksAfterACommandNameWithSpaces(t *testing.T) {
	stat := "4242 (token server) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 1000000 2000 18446744073709551615\n"
	if got, want := statCPU(stat), 3250*time.Millisecond; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := statCPU("4242 (token-server"); got != 0 {
		t.Errorf("a truncated stat: got %s, want 0", got)
	}
}
