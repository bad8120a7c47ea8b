package m2mauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors of the revocation list, returned by Authenticate.
var (
	// ErrRevoked: the token was issued before the time from which the issuer's revocation list
	// refuses its client's tokens (the client is disabled or deleted, or its tokens were revoked).
	ErrRevoked = errors.New("m2mauth: token revoked")
	// ErrRevocationUnavailable: the verifier's revocation list is older than its staleness bound
	// (WithRevocationStaleness), so it cannot tell whether the token is revoked; the token may be
	// fine. Middleware answers 503.
	ErrRevocationUnavailable = errors.New("m2mauth: revocation list unavailable")
)

const (
	// DefaultRevocationStaleness is how long a verifier keeps using its last revocation list
	// when it cannot get a newer one, before it refuses every token.
	DefaultRevocationStaleness = time.Minute
	// defaultRevocationWait is how long the token server may hold a request for the list until
	// it changes (a long-poll): under the 15 s route timeout of common proxies.
	defaultRevocationWait = 10 * time.Second
	maxRevocationWait     = 30 * time.Second
	// revocationMinInterval is the least time between two requests for the list, so that a
	// server or proxy that answers at once, ignoring the wait, is not asked in a loop.
	revocationMinInterval = time.Second
	// revocationNewListGap is the least time between two requests after a new list: the server
	// rebuilds at most every 200 ms, so waiting that long delays no change by more, and replicas
	// that disagree, each answering with a "new" list, are not asked in a tight loop.
	revocationNewListGap = 200 * time.Millisecond
	// revocationClockSkew is the leeway on the list's iat and exp.
	revocationClockSkew = time.Minute
	// revocationMaxBackoff caps the gap after failed requests, well under the default staleness,
	// so that a token server that comes back is read again before the list goes stale.
	revocationMaxBackoff = 15 * time.Second
	// defaultRevocationLimit bounds the list read: 100,000 revoked clients take 5.9 MB
	// (docs/benchmarks.md).
	defaultRevocationLimit = 32 << 20
	// revocationListType is the typ of the list's JWT.
	revocationListType = "revocation-list+jwt"
	// longPollGiveUp is how many long-polls in a row may fail, each followed by a plain request
	// that succeeds, before the verifier stops asking the server to wait and polls every
	// revocationMinInterval instead: something between the two (an HTTP client's timeout, a
	// proxy's route timeout) cuts requests as long as the wait.
	longPollGiveUp = 3
	// longPollMargin is the time a long-poll's answer may take past its wait.
	longPollMargin = 5 * time.Second
)

// revokedForever is the not-before of a client whose every token is refused (disabled, or just
// deleted): the list's state, taken from the latest list rather than merged.
const revokedForever int64 = 253402300799

// revocationHorizon is how long a verifier keeps a not-before that later lists no longer carry:
// the token server's own horizon (every token it refuses has expired: tokenTTL is at most 24h)
// with a minute to spare.
const revocationHorizon = 24*time.Hour + 6*time.Minute

// revocationMergeWindow is how long the verifier keeps a not-before that no list carries any
// more: past a list's exp (10 minutes) and the clock skew allowed on it, no list it could still
// take lacks a revocation made since, replayed or from a replica that has caught up.
const revocationMergeWindow = 15 * time.Minute

// WithoutRevocation turns off the revocation list: tokens of disabled, deleted and revoked
// clients are accepted until they expire.
func WithoutRevocation() VerifierOption {
	return func(c *verifierConfig) { c.revocation.off = true }
}

// WithRevocationListURL takes the revocation list from url instead of the issuer's metadata
// (m2m_revocation_list_uri); it turns revocation checking on for a verifier built with
// WithJWKSURL, which reads no metadata.
func WithRevocationListURL(url string) VerifierOption {
	return func(c *verifierConfig) { c.revocation.url = url }
}

// WithRevocationStaleness is how long the verifier keeps using its last revocation list when it
// cannot get a newer one (default DefaultRevocationStaleness); after that it refuses every token
// with ErrRevocationUnavailable, unless AcceptWhenRevocationUnavailable. It must be positive.
func WithRevocationStaleness(d time.Duration) VerifierOption {
	return func(c *verifierConfig) {
		if d <= 0 {
			c.bad = append(c.bad, fmt.Sprintf("WithRevocationStaleness(%s) is not positive", d))
		}
		c.revocation.staleness = d
	}
}

// AcceptWhenRevocationUnavailable keeps accepting tokens, checked against the last list the
// verifier has (none, if it never got one), when the revocation list is older than its
// staleness bound, and lets NewVerifier succeed when the first fetch of the list fails: the
// choice of availability over revocation while the token server is away.
func AcceptWhenRevocationUnavailable() VerifierOption {
	return func(c *verifierConfig) { c.revocation.accept = true }
}

// WithRevocationWait is how long the token server may hold a request for the revocation list
// until the list changes (default 10s, at most 30s); 0 polls every second instead. A proxy
// between the verifier and the token server must allow requests this long.
func WithRevocationWait(d time.Duration) VerifierOption {
	return func(c *verifierConfig) {
		if d < 0 || d > maxRevocationWait {
			c.bad = append(c.bad, fmt.Sprintf("WithRevocationWait(%s) is not between 0 and %s", d, maxRevocationWait))
		}
		c.revocation.wait = &d
	}
}

// WithRevocationListLimit bounds the size of the revocation list the verifier reads (default
// 32 MiB); a larger list is refused as a failed fetch.
func WithRevocationListLimit(bytes int64) VerifierOption {
	return func(c *verifierConfig) {
		if bytes <= 0 {
			c.bad = append(c.bad, fmt.Sprintf("WithRevocationListLimit(%d) is not positive", bytes))
		}
		c.revocation.limit = bytes
	}
}

type revocationConfig struct {
	off       bool
	url       string
	staleness time.Duration
	accept    bool
	wait      *time.Duration
	limit     int64
}

// RevocationStatus is the state of a verifier's revocation list, for metrics and health checks.
type RevocationStatus struct {
	// Enabled is false for a verifier without revocation checking.
	Enabled bool
	// Entries is the number of client IDs in the list.
	Entries int
	// FreshAt is when the token server last confirmed the list (zero before the first time).
	FreshAt time.Time
	// Stale says that the list is older than the staleness bound: tokens are refused (or, with
	// AcceptWhenRevocationUnavailable, accepted against the last list).
	Stale bool
	// Fetches and Failures count requests for the list, and those that failed. An answer with a
	// list signed before the one in use is neither news nor a failure.
	Fetches, Failures int64
	// LongPoll says that the verifier asks the token server to hold its requests until the list
	// changes; false after long-polls kept failing where plain requests succeed (see
	// WithRevocationWait), or with a wait of 0.
	LongPoll bool
	// LastError is the error of the last failed request, if the last request failed.
	LastError string
}

// RevocationStatus reports the state of the revocation list.
func (v *Verifier) RevocationStatus() RevocationStatus {
	rl := v.revocations
	if rl == nil {
		return RevocationStatus{}
	}
	rl.mu.RLock()
	defer rl.mu.RUnlock()
	return RevocationStatus{
		Enabled:   true,
		Entries:   len(rl.notBefore),
		FreshAt:   rl.freshAt,
		Stale:     rl.notBefore == nil || rl.now().Sub(rl.freshAt) > rl.staleness,
		Fetches:   rl.fetches.Load(),
		Failures:  rl.failed.Load(),
		LastError: rl.lastError,
		LongPoll:  rl.wait > 0,
	}
}

// revocationList keeps the issuer's revocation list fresh: a long-poll that the token server
// answers when the list changes (or after wait), verified with the JWKS keys.
type revocationList struct {
	url          string
	issuer       string
	httpClient   *http.Client
	keys         *keyCache
	fetchTimeout time.Duration
	wait         time.Duration
	staleness    time.Duration
	accept       bool
	limit        int64
	now          func() time.Time

	mu sync.RWMutex
	// notBefore is what check reads: merged, and the latest list's revokedForever entries; nil
	// before the first list.
	notBefore map[string]int64
	// merged holds the finite not-befores and floors of the lists the verifier took lately, the
	// latest of each client (take): revocations only ever move forward on the token server, so
	// a list from a replica that has not seen a change yet, or an older one replayed, cannot
	// take back one the verifier has seen, whatever its iat.
	merged  map[string]mergedEntry
	etag    string
	freshAt time.Time
	// receivedAt is when the latest list came, lifetime its exp less its iat: after half its
	// lifetime the verifier asks without If-None-Match, for the list signed again, so that 304s
	// never stretch a signature past its exp. Measured on the verifier's clock, so that a clock
	// ahead of the server's does not ask before the server signs again.
	receivedAt time.Time
	lifetime   time.Duration
	lastError  string
	// newList says that the last answer was a new list under a new ETag: a long-poll that a
	// change ended, after which the next may start at once.
	newList bool

	fetches, failed atomic.Int64
	// updated is closed and replaced after every successful request; for tests and tools that
	// wait for the next list.
	updated chan struct{}
}

// check refuses a token of clientID issued at iat that the list revokes, and every token when
// the list is stale (unless accept).
func (rl *revocationList) check(clientID string, iat time.Time) error {
	rl.mu.RLock()
	nb, listed := rl.notBefore[clientID]
	have, freshAt := rl.notBefore != nil, rl.freshAt
	rl.mu.RUnlock()
	if age := rl.now().Sub(freshAt); (!have || age > rl.staleness) && !rl.accept {
		if !have {
			return fmt.Errorf("%w: no list was fetched yet", ErrRevocationUnavailable)
		}
		return fmt.Errorf("%w: the list was last confirmed %s ago, the bound is %s", ErrRevocationUnavailable, age.Truncate(time.Second), rl.staleness)
	}
	if listed && iat.Unix() < nb {
		return fmt.Errorf("%w: client %q's tokens issued before %s are revoked, this one was issued at %s", ErrRevoked, clientID,
			time.Unix(nb, 0).UTC().Format(time.RFC3339), iat.UTC().Format(time.RFC3339))
	}
	return nil
}

// Updated returns a channel closed after the next successful request for the list.
func (rl *revocationList) Updated() <-chan struct{} {
	rl.mu.RLock()
	defer rl.mu.RUnlock()
	return rl.updated
}

// fetch asks for the list once; with wait, the server may hold the request until it changes.
func (rl *revocationList) fetch(ctx context.Context, wait time.Duration) (err error) {
	rl.fetches.Add(1)
	rl.mu.Lock()
	rl.newList = false
	rl.mu.Unlock()
	defer func() {
		rl.mu.Lock()
		if err != nil {
			rl.failed.Add(1)
			rl.lastError = err.Error()
		} else {
			rl.lastError = ""
			close(rl.updated)
			rl.updated = make(chan struct{})
		}
		rl.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, rl.fetchTimeout+wait)
	defer cancel()
	u := rl.url
	rl.mu.RLock()
	etag := rl.etag
	if now := rl.now(); now.After(rl.receivedAt.Add(rl.lifetime / 2)) {
		// The token server signs the list again after half its life; a 304 would keep the old
		// signature, which expires.
		etag = ""
	}
	rl.mu.RUnlock()
	if wait > 0 && etag != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "wait=" + strconv.Itoa(int(wait/time.Second))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := rl.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRevocationUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		if etag == "" {
			return fmt.Errorf("%w: %s answered 304 to a request that was not conditional", ErrRevocationUnavailable, rl.url)
		}
		rl.mu.Lock()
		rl.freshAt = rl.now()
		rl.mu.Unlock()
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s answered %d", ErrRevocationUnavailable, rl.url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, rl.limit+1))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRevocationUnavailable, err)
	}
	if int64(len(body)) > rl.limit {
		return fmt.Errorf("%w: %s sent a list over the limit of %d bytes (WithRevocationListLimit)", ErrRevocationUnavailable, rl.url, rl.limit)
	}
	list, floor, iat, exp, err := rl.verify(ctx, string(body))
	if err != nil {
		return err
	}
	rl.mu.Lock()
	rl.take(list, floor)
	held := rl.etag
	rl.receivedAt, rl.lifetime, rl.etag, rl.freshAt = rl.now(), exp.Sub(iat), resp.Header.Get("ETag"), rl.now()
	rl.newList = rl.etag != "" && rl.etag != held
	rl.mu.Unlock()
	return nil
}

// take merges a list into what the verifier holds, under the lock. The finite not-befores and
// floors of every list are merged, the latest of each client kept, so that a list from a replica
// that has not seen a revocation yet, or an older one replayed, cannot take it back; an entry no
// list has carried for revocationMergeWindow (longer than a list's exp and the clock skew) or
// older than revocationHorizon is dropped, which bounds the merge by what lists carried lately.
// The entries that refuse every token (and times still to come) are taken from this list alone,
// so that enabling a client takes effect; their floors stay merged.
func (rl *revocationList) take(list, floor map[string]int64) {
	now := rl.now()
	if rl.merged == nil {
		rl.merged = map[string]mergedEntry{}
	}
	horizon, unseen := now.Add(-revocationHorizon).Unix(), now.Add(-revocationMergeWindow)
	for id, e := range rl.merged {
		if e.notBefore < horizon || e.seen.Before(unseen) {
			delete(rl.merged, id)
		}
	}
	// A finite time ahead of now (a clock ahead, a list of another implementation) is merged as
	// now and applies whole only while a list carries it.
	ceiling := now.Add(revocationClockSkew).Unix()
	merge := func(id string, nb int64) {
		nb = min(nb, ceiling)
		e := rl.merged[id]
		rl.merged[id] = mergedEntry{notBefore: max(e.notBefore, nb), seen: now}
	}
	for id, nb := range list {
		if nb < revokedForever {
			merge(id, nb)
		}
	}
	for id, nb := range floor {
		merge(id, nb)
	}
	effective := make(map[string]int64, len(rl.merged))
	for id, e := range rl.merged {
		effective[id] = e.notBefore
	}
	for id, nb := range list {
		effective[id] = max(effective[id], nb)
	}
	rl.notBefore = effective
}

// mergedEntry is a client's latest not-before over the lists taken, and when a list last
// carried it.
type mergedEntry struct {
	notBefore int64
	seen      time.Time
}

// revocationClaims is the list's payload.
type revocationClaims struct {
	jwt.RegisteredClaims
	Revoked map[string]int64 `json:"not_before"`
	// Floor is, for a client whose not_before refuses every token, the time before which its
	// tokens stay refused after that state ends.
	Floor map[string]int64 `json:"floor"`
}

// verify checks the list's signature with the issuer's token keys, its typ, iss, iat and exp,
// and returns its entries, iat and exp.
func (rl *revocationList) verify(ctx context.Context, raw string) (map[string]int64, map[string]int64, time.Time, time.Time, error) {
	if err := checkAlg(raw); err != nil {
		return nil, nil, time.Time{}, time.Time{}, fmt.Errorf("%w: %w", ErrRevocationUnavailable, err)
	}
	var claims revocationClaims
	_, err := jwt.NewParser(
		jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"}),
		jwt.WithIssuer(rl.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		// A verifier's clock a little behind the token server's must not refuse a list just
		// signed.
		jwt.WithLeeway(revocationClockSkew),
		jwt.WithTimeFunc(rl.now),
	).ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		// The typ keeps an access token, signed by the same keys, from passing as a list.
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, revocationListType) {
			return nil, fmt.Errorf("%w: typ %q", ErrType, typ)
		}
		kid, _ := t.Header["kid"].(string)
		k, err := rl.keys.get(ctx, kid)
		if err != nil {
			return nil, err
		}
		if t.Method.Alg() != k.alg {
			return nil, fmt.Errorf("%w: the list says %s, its key is %s", ErrAlgorithm, t.Method.Alg(), k.alg)
		}
		return k.key, nil
	})
	if err != nil {
		return nil, nil, time.Time{}, time.Time{}, fmt.Errorf("%w: the list from %s does not verify: %w", ErrRevocationUnavailable, rl.url, err)
	}
	if claims.IssuedAt == nil {
		return nil, nil, time.Time{}, time.Time{}, fmt.Errorf("%w: the list from %s has no iat", ErrRevocationUnavailable, rl.url)
	}
	if claims.Revoked == nil {
		claims.Revoked = map[string]int64{}
	}
	return claims.Revoked, claims.Floor, claims.IssuedAt.Time, claims.ExpiresAt.Time, nil
}

// run keeps the list fresh until ctx ends: a long-poll again revocationNewListGap after the
// last one started when it brought a new list (the server answers early only when the list
// changed), else at least revocationMinInterval after (a server or proxy that ignores the
// wait), and after failures a gap that doubles from a second up to revocationMaxBackoff. The
// request after a failure does not ask the server to wait, so that whatever cut a long-poll
// cannot also keep the list from being confirmed; after longPollGiveUp long-polls in a row
// failed that way, the verifier polls.
func (rl *revocationList) run(ctx context.Context) {
	failures, longPollFailures := 0, 0
	for ctx.Err() == nil {
		start := time.Now()
		var pause time.Duration
		rl.mu.RLock()
		wait := rl.wait
		rl.mu.RUnlock()
		if failures > 0 {
			wait = 0
		}
		err := rl.fetch(ctx, wait)
		switch {
		case err != nil:
			if wait > 0 {
				longPollFailures++
			}
			failures = min(failures+1, maxFailures)
			pause = revocationMinInterval
			for i := 1; i < failures && pause < revocationMaxBackoff; i++ {
				pause *= 2
			}
			pause = min(pause, revocationMaxBackoff)
		default:
			if wait > 0 {
				longPollFailures = 0
			} else if longPollFailures >= longPollGiveUp {
				// The plain request went through where long-polls kept failing.
				rl.mu.Lock()
				rl.wait = 0
				rl.mu.Unlock()
			}
			failures = 0
			rl.mu.RLock()
			changed := rl.newList
			rl.mu.RUnlock()
			pause = revocationMinInterval - time.Since(start)
			if changed {
				pause = revocationNewListGap - time.Since(start)
			}
		}
		if pause <= 0 {
			continue
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// newRevocationList returns the list of cfg for the verifier of issuer, or nil when revocation
// checking is off; discovered is the metadata's m2m_revocation_list_uri.
func newRevocationList(cfg *verifierConfig, issuer, discovered string, keys *keyCache) (*revocationList, error) {
	rc := cfg.revocation
	u := rc.url
	if u == "" {
		u = discovered
	}
	if rc.off || u == "" {
		return nil, nil
	}
	if strings.HasPrefix(issuer, "https://") {
		if p, err := url.Parse(u); err != nil || p.Scheme != "https" {
			return nil, fmt.Errorf("%w: the https issuer %s names a revocation list that is not https: %q", ErrRevocationUnavailable, issuer, u)
		}
	}
	wait := defaultRevocationWait
	if rc.wait != nil {
		wait = *rc.wait
	}
	// An HTTP client whose timeout would cut a long-poll gets a shorter wait, or none.
	if limit := cfg.httpClient.Timeout; limit > 0 && wait+longPollMargin > limit {
		wait = max(0, (limit - longPollMargin).Truncate(time.Second))
	}
	if tr, ok := cfg.httpClient.Transport.(*http.Transport); ok && tr.ResponseHeaderTimeout > 0 && wait+longPollMargin > tr.ResponseHeaderTimeout {
		wait = max(0, (tr.ResponseHeaderTimeout - longPollMargin).Truncate(time.Second))
	}
	staleness := rc.staleness
	if staleness == 0 {
		staleness = DefaultRevocationStaleness
	}
	limit := rc.limit
	if limit == 0 {
		limit = defaultRevocationLimit
	}
	return &revocationList{
		url: u, issuer: issuer, httpClient: cfg.httpClient, keys: keys, fetchTimeout: cfg.fetchTimeout,
		wait: wait, staleness: staleness, accept: rc.accept, limit: limit, now: cfg.now,
		updated: make(chan struct{}),
	}, nil
}
