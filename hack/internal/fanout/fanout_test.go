package fanout

import (
	"errors"
	"sync/atomic"
	"testing"
)

func TestRunCallsFOnceForEachIndex(t *testing.T) {
	const n = 1000
	var seen [n]atomic.Int32
	if err := Run(n, 8, func(i int) error { seen[i].Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if got := seen[i].Load(); got != 1 {
			t.Fatalf("f(%d) ran %d times, want once", i, got)
		}
	}
}

func TestRunReturnsAFailureAndStopsStartingWork(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int32
	err := Run(100000, 4, func(i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the failure", err)
	}
	if calls.Load() >= 100000 {
		t.Fatal("every index ran after a failure")
	}
}
