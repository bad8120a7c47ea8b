package tokenserver

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Bounds of the replay cache. A full cache, or a client's full share of it, refuses new jtis
// rather than forget unexpired ones; a jti longer than maxJTILength is refused outright.
const (
	maxReplayEntries   = 1 << 20
	maxReplayPerClient = 10000
	maxJTILength       = 256
	replaySweepEvery   = 30 * time.Second
)

// replayCache remembers the jti of every assertion accepted, until it expires. Each authenticator
// that accepts one-time assertions keeps its own (private_key_jwt's is the only one). It is per
// replica: with several token-server replicas, an assertion can be replayed once at each other
// replica within its (at most 5 minute) lifetime. Entries are fixed-size hashes, expired ones are
// swept every 30 s, and each client may hold at most maxReplayPerClient of them, so that one
// tenant's key cannot fill the server's memory or lock other clients out.
type replayCache struct {
	mu        sync.Mutex
	seen      map[[sha256.Size]byte]replayEntry
	perClient map[string]int
	lastSweep time.Time
}

type replayEntry struct {
	client string
	until  time.Time
}

// first records (client, jti) until exp and reports whether it was new and could be recorded.
func (c *replayCache) first(client, jti string, exp, now time.Time) bool {
	if len(jti) > maxJTILength {
		return false
	}
	key := sha256.Sum256([]byte(client + "\x00" + jti))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.perClient = map[[sha256.Size]byte]replayEntry{}, map[string]int{}
	}
	if now.Sub(c.lastSweep) >= replaySweepEvery {
		for k, e := range c.seen {
			if !now.Before(e.until) {
				delete(c.seen, k)
				if c.perClient[e.client]--; c.perClient[e.client] <= 0 {
					delete(c.perClient, e.client)
				}
			}
		}
		c.lastSweep = now
	}
	if e, ok := c.seen[key]; ok && now.Before(e.until) {
		return false
	}
	if c.perClient[client] >= maxReplayPerClient || len(c.seen) >= maxReplayEntries {
		return false
	}
	c.seen[key] = replayEntry{client: client, until: exp}
	c.perClient[client]++
	return true
}
