package tokenserver

import (
	"cmp"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// Defaults of the limit on failed authentications by source (--failure-rate, --failure-burst,
// --failure-sources). The limit is off by default: behind a Gateway, an Ingress or an SNAT load
// balancer that --trusted-proxies does not name, every caller has the proxy's address, and one
// caller's failures would refuse them all. SuggestedFailureRate is the rate to turn it on with
// once the address is the client's: a workload with a wrong secret fails a few times a minute as
// it restarts or retries with backoff; 100 failures at once and 10 a second after are far above
// that, and far below the thousands of RSA verifications a second that one core does.
const (
	DefaultFailureRate    = 0
	SuggestedFailureRate  = 10
	DefaultFailureBurst   = 100
	DefaultFailureSources = 65536
	// maxRetryAfter bounds the wait a refused source is told, whatever the rate.
	maxRetryAfter = 24 * time.Hour
)

// FailureLimit is the limit on failed authentications by source address, before
// authentication: a token bucket per source (an IPv4 address, an IPv6 /64) that each failed
// authentication empties by one and that refills at Rate a second up to Burst. A source with
// an empty bucket is refused before its credentials are looked at. The zero value (Rate 0)
// limits nothing.
type FailureLimit struct {
	Rate  float64
	Burst int
	// Sources is the most sources remembered (sourceLimiter's eviction says which go first).
	Sources int
}

// sourceKey groups the addresses of one source: an IPv4 address, or the /64 of an IPv6 one,
// since a single host is routinely given a whole /64.
func sourceKey(a netip.Addr) netip.Prefix {
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// bucket is a token bucket: tokens at the time at, refilled since at a rate up to a burst that
// its limit gives.
type bucket struct {
	tokens float64
	at     time.Time
}

// tokensAt is b's tokens at now, refilled since b.at at rate a second up to burst. A now before
// b.at refills nothing.
func (b *bucket) tokensAt(now time.Time, rate float64, burst int) float64 {
	return min(float64(burst), b.tokens+max(now.Sub(b.at).Seconds(), 0)*rate)
}

// minFailureRate is the least --failure-rate other than 0: one failure a day, which refills a
// token within the longest Retry-After.
const minFailureRate = 1.0 / (24 * 60 * 60)

// waitForToken is how long a bucket with tokens (less than one) takes to hold one at rate a
// second, at most maxRetryAfter.
func waitForToken(tokens, rate float64) time.Duration {
	// Bounded as seconds first: a tiny rate would overflow a Duration.
	return time.Duration(min((1-tokens)/rate, maxRetryAfter.Seconds()) * float64(time.Second))
}

// sourceLimiter holds the buckets of sources that failed recently, at most limit.Sources. A
// full bucket is the same as none, so buckets that have refilled are dropped first. When the
// table is still full, a quarter of it goes, the sources with the most tokens left: a source
// that is over its limit has the fewest, so a flood of new addresses (each with Burst-1 tokens
// after its one failure) cannot push it out; to do so an attacker must bring three quarters of
// the table below it, that is empty Burst tokens from each of 3/4·Sources sources, faster than
// they refill. Evicting a quarter at a time keeps the cost of the sort at O(log n) a failure.
type sourceLimiter struct {
	limit FailureLimit
	clock clock.PassiveClock

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

func newSourceLimiter(limit FailureLimit, clk clock.PassiveClock) *sourceLimiter {
	if limit.Rate <= 0 {
		return nil
	}
	limit.Burst = max(limit.Burst, 1)
	if limit.Sources <= 0 {
		limit.Sources = DefaultFailureSources
	}
	return &sourceLimiter{limit: limit, clock: clk, buckets: map[netip.Prefix]*bucket{}}
}

// tokensAt is b's tokens at now, refilled since b.at.
func (l *sourceLimiter) tokensAt(b *bucket, now time.Time) float64 {
	return b.tokensAt(now, l.limit.Rate, l.limit.Burst)
}

// refused reports whether the source of a is over its limit, and then how long until it may
// fail once more.
func (l *sourceLimiter) refused(a netip.Addr) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[sourceKey(a)]
	if b == nil {
		return 0, false
	}
	tokens := l.tokensAt(b, now)
	if tokens >= 1 {
		return 0, false
	}
	return waitForToken(tokens, l.limit.Rate), true
}

// failed takes a token from the source of a.
func (l *sourceLimiter) failed(a netip.Addr) {
	if l == nil {
		return
	}
	now := l.clock.Now()
	key := sourceKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.limit.Sources {
			l.evict(now)
		}
		b = &bucket{tokens: float64(l.limit.Burst), at: now}
		l.buckets[key] = b
	}
	// The bucket may go into debt, down to -Burst: the check and the spend are apart (the
	// authentication runs between), so requests in flight when it reaches 1 all pass; the debt
	// makes the source wait for them, and the long-run rate holds.
	b.tokens, b.at = max(l.tokensAt(b, now)-1, -float64(l.limit.Burst)), now
}

// evict makes room, as the type's comment says. Called with mu held.
func (l *sourceLimiter) evict(now time.Time) {
	type entry struct {
		key    netip.Prefix
		tokens float64
	}
	entries := make([]entry, 0, len(l.buckets))
	for k, b := range l.buckets {
		t := l.tokensAt(b, now)
		if t >= float64(l.limit.Burst) {
			delete(l.buckets, k)
			continue
		}
		entries = append(entries, entry{k, t})
	}
	quarter := max(l.limit.Sources/4, 1)
	if len(l.buckets) > l.limit.Sources-quarter {
		slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(b.tokens, a.tokens) })
		for _, e := range entries[:quarter] {
			delete(l.buckets, e.key)
		}
	}
}

// size is the number of sources remembered.
func (l *sourceLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// retryAfter is the Retry-After value (RFC 9110 §10.2.3) for a wait of d: whole seconds, at
// least 1.
func retryAfter(d time.Duration) int64 {
	return max(int64(math.Ceil(d.Seconds())), 1)
}

// refuseSource answers a request whose source is over its limit, before anything of it is read.
func (s *Server) refuseSource(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	s.refuseTooMany(w, r, newError(reasonSourceLimited, "too many failed authentications from this address; retry after the time in Retry-After"), wait, nil, nil)
}

// refuseTooMany answers with e, a reason of a limit (429), and Retry-After for a wait of wait;
// req and client are as for fail.
func (s *Server) refuseTooMany(w http.ResponseWriter, r *http.Request, e *oauthError, wait time.Duration, req *tokenRequest, client *CachedClient) {
	w.Header().Set("Retry-After", strconv.FormatInt(retryAfter(wait), 10))
	s.fail(w, r, e, req, client)
}

// registerSourcesGauge exports the number of sources the limiter remembers.
func (l *sourceLimiter) registerSourcesGauge(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "m2m_failure_limit_sources",
		Help: "Sources (IPv4 addresses, IPv6 /64s) with recent failed authentications that the token server remembers for its limit, at most --failure-sources.",
	}, func() float64 { return float64(l.size()) }))
}
