package tokenserver

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Defaults of the issuance limit (--issuance-per-minute, --issuance-burst), on each replica. A
// client that reuses its tokens asks once per pod and token lifetime (1 minute to 24 hours, 1
// hour by default): 600 a minute serves 600 pods of one client with the shortest lifetime, and
// a burst of 100 serves 100 of its pods that start at once (a rollout), on a single replica. A
// client that asks for a token per call it makes, thousands a second, meets it at once: its
// requests past the limit are refused before any signature.
const (
	DefaultIssuancePerMinute = 600
	DefaultIssuanceBurst     = 100
	// issuancePruneFloor is the number of clients with a bucket below which the limiter never
	// looks for buckets to drop.
	issuancePruneFloor = 1024
)

// IssuanceLimit is the limit on the token requests of each client, after it is authenticated: a
// token bucket per client, filled to Burst and refilled at PerMinute a minute, from which each
// token request that the client authenticates takes one, whether it then gets a token or is
// refused for its grant, scope or audience. A client's spec.issuanceLimit overrides both. The
// zero value (PerMinute 0) limits nothing, not even clients with an override.
type IssuanceLimit struct {
	PerMinute int
	Burst     int
}

// DefaultIssuanceLimit is the limit of the flags' defaults.
var DefaultIssuanceLimit = IssuanceLimit{PerMinute: DefaultIssuancePerMinute, Burst: DefaultIssuanceBurst}

// of is the limit of client c: its spec.issuanceLimit, or l. An override that the CRD's bounds
// would refuse (an object stored without them) is ignored rather than read as no limit.
func (l IssuanceLimit) of(c *CachedClient) IssuanceLimit {
	if o := c.Spec.IssuanceLimit; o != nil && o.PerMinute > 0 && o.Burst > 0 {
		return IssuanceLimit{PerMinute: int(o.PerMinute), Burst: int(o.Burst)}
	}
	return l
}

// take decides one request of a client whose bucket is b (nil: none yet, a full one) at now
// under l: it returns the bucket after it took a token, or, when b holds less than one, b
// unchanged and how long until it holds one.
func (l IssuanceLimit) take(b *bucket, now time.Time) (after bucket, wait time.Duration, over bool) {
	rate := float64(l.PerMinute) / 60
	if b == nil {
		b = &bucket{tokens: float64(l.Burst), at: now}
	}
	tokens := b.tokensAt(now, rate, l.Burst)
	if tokens < 1 {
		return *b, waitForToken(tokens, rate), true
	}
	return bucket{tokens: tokens - 1, at: now}, 0, false
}

// full reports whether b, last taken from under l, has refilled by now: the same as no bucket.
func (l IssuanceLimit) full(b *bucket, now time.Time) bool {
	return b.tokensAt(now, float64(l.PerMinute)/60, l.Burst) >= float64(l.Burst)
}

// issuanceBucket is the bucket of one client, with what finds the client again and the limit
// it was last taken from under.
type issuanceBucket struct {
	key   types.NamespacedName
	limit IssuanceLimit
	b     bucket
}

// issuanceLimiter holds the buckets of the clients that asked for tokens, by UID, so that a
// client deleted and created again under its name starts afresh. Only authenticated clients
// get a bucket, so their number is bounded by the clients that exist, whatever callers send.
// When the number has doubled since the last look, the buckets that have refilled (the same as
// none) and those of clients no longer cached are dropped: the table stays within twice the
// clients that asked recently (and at least issuancePruneFloor of them), and a deleted
// client's bucket goes at the next look.
type issuanceLimiter struct {
	limit   IssuanceLimit
	clock   clock.PassiveClock
	present ClientPresence // nil: only refilled buckets are dropped

	mu      sync.Mutex
	clients map[types.UID]*issuanceBucket
	pruneAt int
}

func newIssuanceLimiter(limit IssuanceLimit, clk clock.PassiveClock, clients ClientSource) *issuanceLimiter {
	if limit.PerMinute <= 0 {
		return nil
	}
	limit.Burst = max(limit.Burst, 1)
	l := &issuanceLimiter{limit: limit, clock: clk, clients: map[types.UID]*issuanceBucket{}, pruneAt: issuancePruneFloor}
	l.present, _ = clients.(ClientPresence)
	return l
}

// take takes a token from the bucket of c, an authenticated client, and reports whether c is
// over its limit, and then how long until it may ask again.
func (l *issuanceLimiter) take(c *CachedClient) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	limit := l.limit.of(c)
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	e := l.clients[c.UID]
	if e == nil {
		if len(l.clients) >= l.pruneAt {
			l.prune(now)
		}
		e = &issuanceBucket{key: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}}
		l.clients[c.UID] = e
	} else {
		b = &e.b
	}
	after, wait, over := limit.take(b, now)
	e.b, e.limit = after, limit
	return wait, over
}

// exhausted reports whether c, an authenticated client, is over its limit now, without taking
// from its bucket: the private_key_jwt path asks before it spends a place in the replay cache
// on a request that the limit refuses anyway.
func (l *issuanceLimiter) exhausted(c *CachedClient) bool {
	if l == nil {
		return false
	}
	limit := l.limit.of(c)
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.clients[c.UID]
	if e == nil {
		return false
	}
	b := e.b
	_, _, over := limit.take(&b, now)
	return over
}

// prune drops the buckets that have refilled and those of clients that are gone, as the
// type's comment says. Called with mu held.
func (l *issuanceLimiter) prune(now time.Time) {
	for uid, e := range l.clients {
		if e.limit.full(&e.b, now) || (l.present != nil && !l.present.Present(e.key, uid)) {
			delete(l.clients, uid)
		}
	}
	l.pruneAt = max(2*len(l.clients), issuancePruneFloor)
}

// size is the number of clients with a bucket.
func (l *issuanceLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// registerClientsGauge exports the number of clients with a bucket.
func (l *issuanceLimiter) registerClientsGauge(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m2m_issuance_limit_clients",
		Help: "Clients with a bucket of the issuance limit on this replica: those that asked for tokens since the last look for refilled buckets and deleted clients, which comes each time the number doubles.",
	}, func() float64 { return float64(l.size()) }))
}

// refuseClient answers a token request of an authenticated client over its issuance limit.
func (s *Server) refuseClient(w http.ResponseWriter, r *http.Request, wait time.Duration, req *tokenRequest, client *CachedClient) {
	s.refuseTooMany(w, r, newError(reasonClientLimited, "the client asked for tokens faster than its limit allows; retry after the time in Retry-After, and reuse each token until shortly before it expires"), wait, req, client)
}
