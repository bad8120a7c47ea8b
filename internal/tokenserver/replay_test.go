package tokenserver

import (
	"strconv"
	"testing"
	"time"
)

// One client's key cannot fill the replay cache for everyone: a jti over 256 bytes is refused,
// each client holds at most its share, and expired entries are swept.
func TestTheReplayCacheIsBoundedPerClientAndSweepsExpiredEntries(t *testing.T) {
	var c replayCache
	exp := t0.Add(time.Minute)
	if c.first("a", string(make([]byte, maxJTILength+1)), exp, t0) {
		t.Fatal("a jti over the length limit was recorded")
	}
	for i := range maxReplayPerClient {
		if !c.first("a", "jti-"+strconv.Itoa(i), exp, t0) {
			t.Fatalf("jti %d of client a was refused before its share was full", i)
		}
	}
	if c.first("a", "one-more", exp, t0) {
		t.Fatal("client a went over its share")
	}
	if !c.first("b", "jti-0", exp, t0) {
		t.Fatal("client a's full share locked client b out")
	}
	if c.first("b", "jti-0", exp, t0) {
		t.Fatal("a replayed jti was accepted")
	}
	later := exp.Add(replaySweepEvery)
	if !c.first("a", "after-expiry", later.Add(time.Minute), later) || len(c.seen) != 1 {
		t.Fatalf("expired entries were not swept: %d left", len(c.seen))
	}
}
