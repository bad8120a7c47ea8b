package tokenserver

import (
	"crypto/sha256"
	"math"
	"runtime/debug"
	"sync"
	"time"
)

// Bounds of the replay cache.
const (
	// minReplayShare is the share of the cache that every namespace with entries may hold, however
	// many namespaces have entries: at one assertion a second per client, enough for dozens of
	// clients of a namespace within an assertion's 5-minute lifetime.
	minReplayShare = 10000
	// defaultReplayBudget is the budget without a memory limit to derive it from (GOMEMLIMIT
	// unset): 262,144 entries, about 30 MiB.
	defaultReplayBudget = 1 << 18
	// replayMemoryShare is the part of the memory limit that the replay cache may take at its
	// budget.
	replayMemoryShare = 0.10
	// replayEntryBytes is the heap an entry takes, map overhead included, as
	// BenchmarkReplayCacheMemory measures it (docs/benchmarks.md), rounded up.
	replayEntryBytes = 128
	// replayCeiling times the budget is where the cache is full: past it a namespace records
	// only below minReplayShare.
	replayCeiling = 2
	// replayHardCeiling times the budget is where the cache refuses everyone: many namespaces
	// each keeping minReplayShare could otherwise grow it past the memory limit, and refusing
	// private_key_jwt assertions is better than the token server dying for every client.
	replayHardCeiling = 4
	// maxJTILength bounds a jti; a longer one is refused outright.
	maxJTILength     = 256
	replaySweepEvery = 30 * time.Second
	// replayCaches is the number of replay caches of a token server, which share the budget
	// derived from the memory limit: the private_key_jwt assertions' and the DPoP proofs'.
	replayCaches = 2
)

// ReplayBudget is the number of entries the replay cache holds before namespaces share it: a
// tenth of the Go memory limit (GOMEMLIMIT, which the binaries set from the container's memory
// limit) over the size of an entry, and defaultReplayBudget without a limit.
func ReplayBudget(memoryLimit int64) int {
	if memoryLimit <= 0 || memoryLimit == math.MaxInt64 {
		return defaultReplayBudget
	}
	return max(int(float64(memoryLimit)*replayMemoryShare/replayEntryBytes), minReplayShare)
}

// replayKey is the fixed-size key of an entry: the SHA-256 of what one use is unique within (a
// client ID for private_key_jwt, a proof key's thumbprint for DPoP proofs) and the jti, so that
// an entry's size does not depend on what a client sends.
type replayKey [sha256.Size]byte

// replayCache remembers one-time values (the jti of every assertion accepted) until they expire.
// Each authenticator that accepts one-time assertions keeps its own. It is per replica: with
// several token-server replicas, an assertion can be replayed once at each other replica within
// its (at most 5 minute) lifetime.
//
// It is fair by namespace, the tenant boundary: each namespace with entries may hold at most
// max(budget / namespaces with entries, minReplayShare) of them, counting a namespace that is
// about to record its first. A namespace over its share is refused until its entries expire, and
// no other namespace is: one tenant's clients (which may all list one key) cannot lock other
// tenants out. Entries are never evicted before they expire (an evicted jti could be replayed),
// so entries that a namespace recorded under a larger share stay when more namespaces arrive;
// were shares the only rule, namespaces filling theirs one after another would add up to
// budget × (1 + 1/2 + ... + 1/n). So once the cache holds replayCeiling times the budget, a
// namespace may record only below minReplayShare: every namespace keeps that much, and the cache
// holds at most replayCeiling × budget + minReplayShare × namespaces entries, of fixed size, with
// expired ones swept every 30 s. Past replayHardCeiling × budget (40% of the memory limit) it
// refuses everyone, which only a great many namespaces can reach.
type replayCache struct {
	// budget is B; zero means ReplayBudget of the process's memory limit, read at the first use,
	// shared with the process's other replay caches (replayCaches), so that all of them together
	// stay within the bounds the budget's derivation promises.
	budget int

	mu        sync.Mutex
	seen      map[replayKey]replayEntry
	perNS     map[string]int
	lastSweep time.Time
}

type replayEntry struct {
	until     int64 // Unix nanoseconds
	namespace string
}

// first records (scope, jti) for a client of namespace until exp, and reports whether it was new
// and could be recorded.
func (c *replayCache) first(namespace, scope, jti string, exp, now time.Time) bool {
	return c.record(namespace, scope, jti, exp, now) == replayNew
}

// replayVerdict is what record found: a new ID, recorded; one seen before; or no room.
type replayVerdict int

const (
	replayNew replayVerdict = iota
	replaySeen
	replayFull
)

// record is first, telling an ID seen before (or over maxJTILength) from a cache without room
// for it, so that a refusal can say which.
func (c *replayCache) record(namespace, scope, jti string, exp, now time.Time) replayVerdict {
	if len(jti) > maxJTILength {
		return replaySeen
	}
	key := replayKey(sha256.Sum256([]byte(scope + "\x00" + jti)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.perNS = map[replayKey]replayEntry{}, map[string]int{}
		if c.budget <= 0 {
			c.budget = ReplayBudget(debug.SetMemoryLimit(-1)) / replayCaches
		}
	}
	if now.Sub(c.lastSweep) >= replaySweepEvery {
		c.sweep(now)
	}
	if e, ok := c.seen[key]; ok {
		if now.UnixNano() < e.until {
			return replaySeen
		}
		c.forget(key, e) // expired, not swept yet
	}
	held := c.perNS[namespace]
	namespaces := len(c.perNS)
	if held == 0 {
		namespaces++
	}
	if held >= max(c.budget/namespaces, minReplayShare) {
		return replayFull
	}
	if len(c.seen) >= replayCeiling*c.budget && held >= minReplayShare {
		return replayFull // full: only what every namespace is owed
	}
	if len(c.seen) >= replayHardCeiling*c.budget {
		return replayFull // out of memory to give: fail closed
	}
	c.seen[key] = replayEntry{until: exp.UnixNano(), namespace: namespace}
	c.perNS[namespace] = held + 1
	return replayNew
}

// sweep removes the entries that expired by now.
func (c *replayCache) sweep(now time.Time) {
	at := now.UnixNano()
	for k, e := range c.seen {
		if at >= e.until {
			c.forget(k, e)
		}
	}
	c.lastSweep = now
}

// forget removes the entry e of key and its count.
func (c *replayCache) forget(key replayKey, e replayEntry) {
	delete(c.seen, key)
	if c.perNS[e.namespace]--; c.perNS[e.namespace] <= 0 {
		delete(c.perNS, e.namespace)
	}
}
