package tokenserverprocess

import "testing"

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
