package tokenserver

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// One namespace cannot fill the replay cache for everyone: a jti over 256 bytes is refused, a
// namespace holds at most its share, a replay is refused, and expired entries are swept.
func TestTheReplayCacheIsBoundedPerNamespaceAndSweepsExpiredEntries(t *testing.T) {
	c := replayCache{budget: 2 * minReplayShare}
	exp := t0.Add(time.Minute)
	if c.first("ns-a", "a", string(make([]byte, maxJTILength+1)), exp, t0) {
		t.Fatal("a jti over the length limit was recorded")
	}
	// Alone, namespace a may hold the whole budget.
	for i := range 2 * minReplayShare {
		if !c.first("ns-a", "a", "jti-"+strconv.Itoa(i), exp, t0) {
			t.Fatalf("jti %d of namespace a was refused before its share was full", i)
		}
	}
	if c.first("ns-a", "a", "one-more", exp, t0) {
		t.Fatal("namespace a went over the budget")
	}
	if !c.first("ns-b", "b", "jti-0", exp, t0) {
		t.Fatal("namespace a's full share locked namespace b out")
	}
	if c.first("ns-b", "b", "jti-0", exp, t0) {
		t.Fatal("a replayed jti was accepted")
	}
	if c.first("ns-a", "a2", "another-client", exp, t0) {
		t.Fatal("namespace a, over its share of two, recorded a jti of another of its clients")
	}
	later := exp.Add(replaySweepEvery)
	if !c.first("ns-a", "a", "after-expiry", later.Add(time.Minute), later) || len(c.seen) != 1 || c.perNS["ns-b"] != 0 {
		t.Fatalf("expired entries were not swept: %d left, %v", len(c.seen), c.perNS)
	}
}

// The denial of service of issue 20: 200 clients of one namespace (they may all list the same
// public key) each fill what the cache lets them; a client of another namespace is refused
// nothing.
func TestAFloodFromOneNamespaceRefusesNoAssertionOfAnother(t *testing.T) {
	c := replayCache{budget: 5 * minReplayShare}
	exp := t0.Add(MaxPrivateKeyJWTLifetime)
	for client := range 200 {
		for i := range 1000 {
			if !c.first("flood", "client-"+strconv.Itoa(client), strconv.Itoa(i), exp, t0) {
				break
			}
		}
	}
	if held := c.perNS["flood"]; held != c.budget {
		t.Fatalf("the flooding namespace holds %d entries, not the budget of %d", held, c.budget)
	}
	refused := 0
	for i := range 2 * minReplayShare {
		if !c.first("victim", "victim-client", strconv.Itoa(i), exp, t0) {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("a client of another namespace was refused %d of %d assertions", refused, 2*minReplayShare)
	}
	if c.first("flood", "client-0", "after-the-victim", exp, t0) {
		t.Fatal("the flooding namespace, over its share, recorded another jti")
	}
}

// Namespaces that fill their shares one after another reach the ceiling; past it, a namespace
// with no entries still records (it is below an even share), and the ones above it do not.
// Namespaces that fill their shares one after another keep what they recorded under a larger
// share (entries are never evicted before they expire): without a bound on the whole, five
// namespaces held 2.3 times the budget, a thousand eleven times. Once the cache holds twice its
// budget, only a namespace below minReplayShare records, so the cache holds at most 2 × budget +
// minReplayShare × namespaces, and a namespace with few entries is still never refused.
func TestNamespacesFillingTheirSharesOneAfterAnotherStayWithinTwiceTheBudgetPlusEachNamespacesFloor(t *testing.T) {
	c := replayCache{budget: 40 * minReplayShare}
	exp := t0.Add(time.Minute)
	const namespaces = 5
	for ns := range namespaces {
		for i := range c.budget {
			if !c.first("ns-"+strconv.Itoa(ns), "c-"+strconv.Itoa(ns), strconv.Itoa(i), exp, t0) {
				break
			}
		}
	}
	if bound := replayCeiling*c.budget + minReplayShare*namespaces; len(c.seen) > bound {
		t.Fatalf("the cache holds %d entries, over 2 × budget + floor × namespaces = %d", len(c.seen), bound)
	}
	for i := range minReplayShare {
		if !c.first("idle", "idle-client", strconv.Itoa(i), exp, t0) {
			t.Fatalf("a namespace with %d entries, below the floor, was refused in a full cache", i)
		}
	}
	if c.first("idle", "idle-client", "one-more", exp, t0) {
		t.Fatal("a namespace at the floor recorded in a full cache")
	}
}

func TestTheReplayBudgetIsATenthOfTheMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  int
	}{
		{0, defaultReplayBudget},
		{1<<63 - 1, defaultReplayBudget}, // GOMEMLIMIT unset
		{256 << 20, 256 << 20 / 10 / replayEntryBytes},
		{8 << 20, minReplayShare}, // never below one namespace's share
	} {
		if got := ReplayBudget(tc.limit); got != tc.want {
			t.Errorf("ReplayBudget(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// BenchmarkReplayCacheMemory reports the heap an entry takes (bytes/entry), which
// replayEntryBytes must cover: 100,000 entries across 10 namespaces.
func BenchmarkReplayCacheMemory(b *testing.B) {
	const n = 100000
	exp := t0.Add(time.Minute)
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := replayCache{budget: n}
		for i := range n {
			ns := "namespace-" + strconv.Itoa(i%10)
			c.first(ns, "client", strconv.Itoa(i), exp, t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(c.seen)), "bytes/entry")
		runtime.KeepAlive(&c)
	}
}

// Many namespaces each keeping the floor could grow the cache past the memory limit; past four
// times the budget it refuses everyone instead (fail closed).
func TestManyNamespacesAtTheirFloorStopAtFourTimesTheBudget(t *testing.T) {
	c := replayCache{budget: minReplayShare}
	exp := t0.Add(time.Minute)
	for ns := range 10 {
		for i := range minReplayShare {
			if !c.first("ns-"+strconv.Itoa(ns), "c-"+strconv.Itoa(ns), strconv.Itoa(i), exp, t0) {
				break
			}
		}
	}
	if len(c.seen) != replayHardCeiling*c.budget {
		t.Fatalf("the cache holds %d entries, want the hard ceiling %d", len(c.seen), replayHardCeiling*c.budget)
	}
	if c.first("new", "c", "1", exp, t0) {
		t.Fatal("a namespace recorded past the hard ceiling")
	}
}

// A refusal says whether the ID was seen before or the cache had no room for it: an operator who
// reads "replayed" when the namespace's share is full looks for the wrong culprit (review).
func TestTheReplayCacheTellsASeenIDFromACacheWithoutRoom(t *testing.T) {
	c := replayCache{budget: minReplayShare}
	exp := t0.Add(time.Minute)
	if v := c.record("team", "scope", "a", exp, t0); v != replayNew {
		t.Fatalf("a new ID: %v", v)
	}
	if v := c.record("team", "scope", "a", exp, t0); v != replaySeen {
		t.Fatalf("the same ID again: %v, want seen", v)
	}
	for i := range minReplayShare {
		c.record("team", "scope", fmt.Sprint("fill-", i), exp, t0)
	}
	if v := c.record("team", "scope", "one-more", exp, t0); v != replayFull {
		t.Fatalf("an ID past the namespace's share: %v, want full", v)
	}
}
