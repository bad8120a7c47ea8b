package dpop

import (
	"crypto"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// header is what a proof's protected header says once checked: its algorithm, its public key
// and the key's thumbprint.
type header struct {
	alg string
	pub crypto.PublicKey
	jkt string
}

// Bounds of the header cache.
const (
	// headerCacheEntries is how many headers each of the cache's two generations holds.
	headerCacheEntries = 1024
	// maxCachedHeader is the longest header remembered (an RSA 4096 key's is about 900 bytes).
	maxCachedHeader = 1536
)

// headerCache remembers checked headers by their encoded bytes. A client signs every proof
// with one key, so its proofs' headers (typ, alg, jwk) are the same bytes, and parsing them
// again (the JSON twice over for the case rule, the key, its thumbprint) was a fifth of a
// proof's cost at the token endpoint. The result is a function of the bytes alone, so a hit is
// as good as a parse; only headers that pass are kept. Two generations of headerCacheEntries:
// when the current one fills it becomes the previous and the oldest is dropped, so memory
// stays under 2 × headerCacheEntries × (maxCachedHeader + a key), and headers that keep
// coming back stay.
type headerCache struct {
	mu        sync.Mutex
	cur, prev map[string]*header
}

var headers headerCache

// parse checks an encoded header, or finds it checked before.
func (c *headerCache) parse(encoded string) (*header, error) {
	cacheable := len(encoded) <= maxCachedHeader
	if cacheable {
		c.mu.Lock()
		h, ok := c.cur[encoded]
		if !ok {
			if h, ok = c.prev[encoded]; ok {
				c.put(encoded, h)
			}
		}
		c.mu.Unlock()
		if ok {
			return h, nil
		}
	}
	h, err := parseHeader(encoded)
	if err != nil || !cacheable {
		return h, err
	}
	c.mu.Lock()
	c.put(encoded, h)
	c.mu.Unlock()
	return h, nil
}

// put adds h under the lock.
func (c *headerCache) put(encoded string, h *header) {
	if len(c.cur) >= headerCacheEntries {
		c.prev, c.cur = c.cur, nil
	}
	if c.cur == nil {
		c.cur = make(map[string]*header, headerCacheEntries)
	}
	c.cur[encoded] = h
}

// parseHeader checks a header: typ, no crit, a known algorithm, a public jwk of the algorithm's
// key type with no private member; and computes the thumbprint.
func parseHeader(encoded string) (*header, error) {
	var h proofHeader
	if err := decodePart(encoded, &h, "typ", "alg", "jwk", "crit"); err != nil {
		return nil, invalid("the header is not base64url JSON")
	}
	switch {
	case h.Type != Type:
		return nil, invalid("typ is not %s", Type)
	case h.Critical != nil:
		return nil, invalid("the header has crit, whose extensions are not understood")
	}
	kt, known := keyTypeOf[h.Algorithm]
	if !known {
		return nil, invalid("the algorithm is not accepted")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(h.Key, &members); err != nil {
		return nil, invalid("the header has no jwk object")
	}
	for m := range members {
		// encoding/json matches members in any case, so the check must too.
		if slices.Contains(privateMembers, strings.ToLower(m)) {
			return nil, invalid("the jwk holds a private key")
		}
	}
	var k jwk.Key
	if err := json.Unmarshal(h.Key, &k); err != nil {
		return nil, invalid("the jwk is malformed")
	}
	if k.KeyType != kt[0] || k.Curve != kt[1] || k.Algorithm != "" && k.Algorithm != h.Algorithm {
		return nil, invalid("the jwk is not a key of the algorithm")
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, invalid("the jwk is not an accepted key")
	}
	// The thumbprint of the key as parsed, re-encoded, not of the members as sent: base64url
	// decoding is lenient and RSA's n may carry leading zeros, so one key could otherwise have
	// many thumbprints, which other RFC 7638 implementations would not match.
	canonical, err := jwk.FromPublicKey(pub)
	if err != nil {
		return nil, invalid("the jwk has no thumbprint")
	}
	jkt, err := canonical.Thumbprint()
	if err != nil {
		return nil, invalid("the jwk has no thumbprint")
	}
	return &header{alg: h.Algorithm, pub: pub, jkt: jkt}, nil
}
