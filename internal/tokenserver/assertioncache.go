package tokenserver

import (
	"crypto"
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// A pod re-presents the same projected ServiceAccount token (a CI job the same federated token)
// for up to an hour, and verifying its RSA signature costs more than signing the access token it
// buys. issuerKeys therefore keeps what a full verification established, keyed by the SHA-256 of
// the whole assertion, and answers the same assertion again without the signature check. Every
// other check reruns on each request (acceptedAgain), and where one fails the assertion goes
// through the full verification, so that a hit gives the answer a full verification would.
//
// The cache is bounded per partition (the ServiceAccount's namespace for the cluster's issuer,
// the subject for a federated one: what one tenant can obtain tokens for) and in total. A tenant
// flooding the cache with valid tokens of its own namespace replaces its own entries; when the
// whole cache is full, a newcomer takes the place of the oldest entry of a partition over its
// share, so that no tenant keeps the others out. An entry's weight does not depend on what the
// token holds: tokens over maxCachedAssertion are not kept, and of aud only what the server
// asked for is.
const (
	// assertionCachePerPartition bounds the entries of one namespace or federated subject.
	assertionCachePerPartition = 1024
	// assertionCacheEntries bounds the entries of one issuer.
	assertionCacheEntries = 16384
	// assertionCacheSweepEvery is the least time between two sweeps of expired entries, which
	// run only when the cache is full.
	assertionCacheSweepEvery = time.Minute
	// maxCachedAssertion bounds the assertions kept, in bytes: a ServiceAccount token is about
	// 1 KiB, a CI system's federated token 1 to 2 KiB. A larger one, padded to weigh on the
	// cache (its subject and issuer are kept), is verified in full each time instead.
	maxCachedAssertion = 8 << 10
)

// verifiedAssertion is what a full verification of an assertion established, and what
// acceptedAgain needs to decide whether it still holds.
type verifiedAssertion struct {
	iss, sub string
	aud      []string
	exp      time.Time
	nbf      time.Time
	hasNbf   bool
	// kid and key are the key that verified the signature: the entry holds while the issuer
	// still publishes that key under that kid.
	kid string
	key assertionKey
}

// acceptedAgain reports whether a full verification of the assertion that established v would
// accept it now, with audiences and the issuer's current keys: the checks of issuerKeys.verify
// that depend on anything but the assertion's bytes, with the same rules as the JWT parser
// applies there (exp and nbf with assertionLeeway; one of audiences named when there are any).
func (v *verifiedAssertion) acceptedAgain(now time.Time, audiences []string, issuer string, keys map[string]assertionKey) bool {
	current, ok := keys[v.kid]
	switch {
	case !ok || current.alg != v.key.alg || !samePublicKey(current.key, v.key.key):
		return false
	case issuer == "" || issuer != v.iss:
		return false
	case !now.Before(v.exp.Add(assertionLeeway)):
		return false
	case v.hasNbf && now.Before(v.nbf.Add(-assertionLeeway)):
		return false
	}
	return audienceAccepted(v.aud, audiences)
}

// audienceAccepted is the JWT parser's audience rule as issuerKeys.verify configures it: no
// audiences asks for nothing; otherwise aud must name one of them.
func audienceAccepted(aud, audiences []string) bool {
	if len(audiences) == 0 {
		return true
	}
	if len(aud) == 0 || len(aud) == 1 && aud[0] == "" {
		return false
	}
	for _, a := range aud {
		if slices.Contains(audiences, a) {
			return true
		}
	}
	return false
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

type assertionHash [sha256.Size]byte

func hashAssertion(token string) assertionHash { return sha256.Sum256([]byte(token)) }

// assertionCache holds verified assertions of one issuer. The zero value is not usable; see
// newAssertionCache.
type assertionCache struct {
	perPartition, total int

	mu      sync.RWMutex
	entries map[assertionHash]*cachedAssertion
	// partitions hold their entries' hashes, oldest first; a partition without entries is
	// deleted, so there are never more partitions than entries.
	partitions map[string]*[]assertionHash
	lastSweep  time.Time
}

type cachedAssertion struct {
	verifiedAssertion
	partition string
}

func newAssertionCache(perPartition, total int) *assertionCache {
	return &assertionCache{perPartition: perPartition, total: total, entries: map[assertionHash]*cachedAssertion{}, partitions: map[string]*[]assertionHash{}}
}

// get is the verification cached for h, copied so that a later put cannot change it under the
// caller.
func (c *assertionCache) get(h assertionHash) (verifiedAssertion, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[h]
	if !ok {
		return verifiedAssertion{}, false
	}
	return e.verifiedAssertion, true
}

// put keeps v for h in partition. A full partition drops its own oldest entry; when the issuer's
// total is reached, expired entries are swept (at most every assertionCacheSweepEvery), and
// failing room the partition drops its own oldest entry, or, when it has none, the oldest entry
// of a partition over its share goes.
func (c *assertionCache) put(h assertionHash, partition string, v verifiedAssertion, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[h]; ok {
		// The same assertion, so the same subject and partition.
		e.verifiedAssertion = v
		return
	}
	if len(c.entries) >= c.total && now.Sub(c.lastSweep) >= assertionCacheSweepEvery {
		c.sweep(now)
	}
	hashes := c.partitions[partition]
	switch own := c.partitionLen(partition); {
	case own >= c.perPartition, len(c.entries) >= c.total && own > 0:
		c.dropOldest(partition, hashes)
	case len(c.entries) >= c.total:
		// A newcomer takes the place of the oldest entry of a partition over its fair share,
		// so that partitions that filled the cache first do not keep others out until their
		// entries expire.
		other, ok := c.overShare()
		if !ok {
			return
		}
		c.dropOldest(other, c.partitions[other])
	}
	if hashes = c.partitions[partition]; hashes == nil {
		hashes = &[]assertionHash{}
		c.partitions[partition] = hashes
	}
	*hashes = append(*hashes, h)
	c.entries[h] = &cachedAssertion{verifiedAssertion: v, partition: partition}
}

// overShare finds a partition holding more than its share of the cache were one more partition
// to join. One exists whenever the cache is full: some partition holds at least the average,
// which is more than that share.
func (c *assertionCache) overShare() (string, bool) {
	share := c.total / (len(c.partitions) + 1)
	for partition, hashes := range c.partitions {
		if len(*hashes) > share {
			return partition, true
		}
	}
	return "", false
}

func (c *assertionCache) partitionLen(partition string) int {
	if hashes := c.partitions[partition]; hashes != nil {
		return len(*hashes)
	}
	return 0
}

func (c *assertionCache) dropOldest(partition string, hashes *[]assertionHash) {
	delete(c.entries, (*hashes)[0])
	*hashes = (*hashes)[1:]
	if len(*hashes) == 0 {
		delete(c.partitions, partition)
	}
}

// forget drops h, whose assertion a full verification has just refused.
func (c *assertionCache) forget(h assertionHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[h]
	if !ok {
		return
	}
	delete(c.entries, h)
	hashes := c.partitions[e.partition]
	*hashes = slices.DeleteFunc(*hashes, func(x assertionHash) bool { return x == h })
	if len(*hashes) == 0 {
		delete(c.partitions, e.partition)
	}
}

// sweep drops the entries that have expired for good: a full verification refuses them from now
// on.
func (c *assertionCache) sweep(now time.Time) {
	c.lastSweep = now
	for partition, hashes := range c.partitions {
		*hashes = slices.DeleteFunc(*hashes, func(h assertionHash) bool {
			if now.Before(c.entries[h].exp.Add(assertionLeeway)) {
				return false
			}
			delete(c.entries, h)
			return true
		})
		if len(*hashes) == 0 {
			delete(c.partitions, partition)
		}
	}
}

// len is the number of cached assertions.
func (c *assertionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
