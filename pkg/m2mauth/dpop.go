package m2mauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// Errors of AuthenticateRequest for DPoP (RFC 9449), besides those of Authenticate. Test them
// with errors.Is.
var (
	// ErrDPoPProof: the DPoP proof is missing, malformed, for another request (method, URL or
	// token), by a key the token is not bound to, stale, or replayed (invalid_dpop_proof).
	ErrDPoPProof = errors.New("m2mauth: invalid DPoP proof")
	// ErrDPoPNonce: the proof lacks the verifier's current server nonce (use_dpop_nonce); the
	// answer carries a fresh one in DPoP-Nonce.
	ErrDPoPNonce = errors.New("m2mauth: the DPoP proof must carry the server's nonce")
	// ErrDPoPBound: the token is bound to a DPoP key (cnf.jkt) and came without a proof, as a
	// bearer token; or it came with the DPoP scheme and is bound to no key.
	ErrDPoPBound = errors.New("m2mauth: the token's DPoP binding does not match how it was sent")
	// ErrDPoPRequired: the route requires DPoP (RequireDPoP) and the token came as a bearer token.
	ErrDPoPRequired = errors.New("m2mauth: this route requires a DPoP-bound token")
	// ErrDPoPReplayFull: the replay cache holds as many live proofs as it may, so a new proof
	// cannot be checked against replay and is refused (Middleware: 503). Forgetting live proofs
	// instead would let anyone with a token of their own flush the cache and replay a captured
	// proof of someone else's.
	ErrDPoPReplayFull = errors.New("m2mauth: the DPoP replay cache is full; the proof cannot be checked now")
)

// DefaultDPoPReplayEntries is the replay cache's size when WithDPoPReplayCache is not given.
// An entry is a 32-byte hash and an expiry, in a map and in a queue: measured at this size, full,
// the cache took 12 MB of heap (183 bytes an entry, the queue's spare room included).
const DefaultDPoPReplayEntries = 65536

// dpopConfig is what the verifier's options say about DPoP.
type dpopConfig struct {
	baseURLs      []string
	nonces        *dpop.NonceSource
	replayEntries int
}

// WithDPoPBaseURLs names the URLs under which clients reach this service, scheme, host and any
// path prefix a proxy strips (https://api.example.com, https://example.com/api): a proof's htu
// must be one of them followed by the request's path. Without it, htu must be the URL of the
// request as it reached this process: its Host header, and https when it came over TLS, http
// otherwise. Forwarded headers (Forwarded, X-Forwarded-*) are never read: behind a proxy that
// terminates TLS or rewrites the host or path, give this option, or every proof is refused.
func WithDPoPBaseURLs(urls ...string) VerifierOption {
	return func(c *verifierConfig) {
		for _, u := range urls {
			c.dpop.baseURLs = append(c.dpop.baseURLs, strings.TrimSuffix(u, "/"))
		}
	}
}

// WithDPoPNonces requires DPoP proofs to carry a server nonce of src (RFC 9449 §9): a proof
// without one, or with a stale one, is refused with use_dpop_nonce and a fresh nonce in the
// DPoP-Nonce header, which NewTransport retries with. Replicas that share src.Key accept each
// other's nonces. Nonces bound the time a proof can be replayed at a replica that did not see
// it (replicas do not share their replay caches) to src's window.
func WithDPoPNonces(src dpop.NonceSource) VerifierOption {
	return func(c *verifierConfig) {
		if len(src.Key) < 16 {
			c.bad = append(c.bad, "WithDPoPNonces needs a key of at least 16 bytes")
		}
		c.dpop.nonces = &src
	}
}

// WithDPoPReplayCache bounds the verifier's DPoP replay cache to entries proofs (default
// DefaultDPoPReplayEntries). A proof is remembered until it is too old to be accepted (its iat
// plus a minute). When the cache is full of proofs still valid, the oldest is forgotten: a
// verifier that accepts more than entries proofs a minute then detects the replay of a proof
// only while it is among the last entries accepted.
func WithDPoPReplayCache(entries int) VerifierOption {
	return func(c *verifierConfig) {
		if entries < 1 {
			c.bad = append(c.bad, fmt.Sprintf("WithDPoPReplayCache(%d) is not positive", entries))
		}
		c.dpop.replayEntries = entries
	}
}

// RequireDPoP refuses, for this call or route, a token sent as a bearer token: only a DPoP-bound
// token with a valid proof is accepted.
func RequireDPoP() AuthOption { return func(c *authConfig) { c.requireDPoP = true } }

// dpopState is a verifier's DPoP settings and replay cache.
type dpopState struct {
	baseURLs []string
	nonces   *dpop.NonceSource
	replays  *replayCache
}

func newDPoPState(c dpopConfig) *dpopState {
	entries := c.replayEntries
	if entries == 0 {
		entries = DefaultDPoPReplayEntries
	}
	return &dpopState{baseURLs: c.baseURLs, nonces: c.nonces, replays: newReplayCache(entries)}
}

// proofBinding is what AuthenticateRequest learnt from a verified proof, for Authenticate.
type proofBinding struct{ jkt string }

// checkBinding is Authenticate's check of the token's cnf claim against how the token came: a
// certificate binding (x5t#S256) needs the verified client certificate of that thumbprint, a key
// binding (jkt) a proof of that key, and a cnf with neither is refused as a binding this package
// does not understand.
func (cfg *authConfig) checkBinding(c *Claims) error {
	jkt, x5t, bound := confirmation(c)
	if x5t != nil {
		if err := cfg.checkCertificate(x5t); err != nil {
			return err
		}
	}
	switch {
	case cfg.proof == nil && bound && (jkt != "" || x5t == nil):
		return fmt.Errorf("%w: the token is bound to a DPoP key and came without a proof", ErrDPoPBound)
	case cfg.proof == nil && cfg.requireDPoP:
		return ErrDPoPRequired
	case cfg.proof == nil:
		return nil
	case !bound || x5t != nil && jkt == "":
		return fmt.Errorf("%w: the token came with the DPoP scheme and is bound to no key", ErrDPoPBound)
	case subtle.ConstantTimeCompare([]byte(jkt), []byte(cfg.proof.jkt)) != 1:
		return fmt.Errorf("%w: the proof's key is not the one the token is bound to", ErrDPoPProof)
	}
	return nil
}

// confirmation returns the token's cnf.jkt and cnf["x5t#S256"] (nil when absent, any value
// otherwise, for checkCertificate to refuse what is not a thumbprint); bound is true for a token
// with any cnf, so that a cnf this package does not understand (a malformed jkt) is not taken for
// none.
func confirmation(c *Claims) (jkt string, x5t any, bound bool) {
	raw, ok := c.Custom["cnf"]
	if !ok {
		return "", nil, false
	}
	m, _ := raw.(map[string]any)
	jkt, _ = m["jkt"].(string)
	return jkt, m["x5t#S256"], true
}

// AuthenticateRequest authenticates r's access token: Authorization: Bearer, as Authenticate
// does, or Authorization: DPoP with one DPoP proof header (RFC 9449 §7), which must be valid for
// r (its method and URL, see WithDPoPBaseURLs), for the token (ath), by the key the token is
// bound to (cnf.jkt), fresh (issued at most a minute ago, at most 10 seconds ahead), not seen
// before by this verifier, and with the server nonce when WithDPoPNonces is given. A token bound
// to a key is refused as a bearer token (ErrDPoPBound), and with RequireDPoP every bearer token
// is. A proof is remembered only once the token is verified, so that no unauthenticated request
// takes room in the replay cache.
func (v *Verifier) AuthenticateRequest(r *http.Request, opts ...AuthOption) (*Claims, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	switch {
	case !ok || token == "":
		return nil, fmt.Errorf("%w: no access token", ErrMalformed)
	case strings.EqualFold(scheme, "Bearer"):
		return v.Authenticate(r.Context(), token, append(opts, withPeer(r))...)
	case !strings.EqualFold(scheme, "DPoP"):
		return nil, fmt.Errorf("%w: the Authorization scheme is neither Bearer nor DPoP", ErrMalformed)
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return nil, fmt.Errorf("%w: %d DPoP headers, one is required", ErrDPoPProof, len(proofs))
	}
	now := v.now()
	d := v.dpop
	o := dpop.VerifyOptions{Method: r.Method, URLs: d.requestURLs(r), Now: now, AccessToken: token}
	if d.nonces != nil {
		o.Nonce = func(n string) error { return d.nonces.Check(n, now) }
	}
	p, err := dpop.Verify(proofs[0], o)
	switch {
	case errors.Is(err, dpop.ErrUseNonce):
		return nil, fmt.Errorf("%w: %w", ErrDPoPNonce, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrDPoPProof, err)
	}
	claims, err := v.Authenticate(r.Context(), token, append(opts, withPeer(r), func(c *authConfig) { c.proof = &proofBinding{jkt: p.JKT} })...)
	if err != nil {
		return nil, err
	}
	// A second's slack past Until, so that no rounding lets the proof in again as it ages out.
	switch d.replays.record(p.JKT, p.JTI, p.Until.Add(time.Second), now) {
	case replaySeen:
		return nil, fmt.Errorf("%w: the proof was used before", ErrDPoPProof)
	case replayFull:
		return nil, ErrDPoPReplayFull
	}
	return claims, nil
}

// requestURLs are the htu values a proof for r may carry.
func (d *dpopState) requestURLs(r *http.Request) []string {
	path := r.URL.EscapedPath()
	if len(d.baseURLs) > 0 {
		out := make([]string, len(d.baseURLs))
		for i, b := range d.baseURLs {
			out[i] = b + path
		}
		return out
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return []string{scheme + "://" + r.Host + path}
}

// currentNonce is the nonce for a DPoP-Nonce header, "" without WithDPoPNonces.
func (d *dpopState) currentNonce(now time.Time) string {
	if d.nonces == nil {
		return ""
	}
	return d.nonces.Current(now)
}

// replayCache remembers accepted proofs by their key's thumbprint and jti until they expire, up
// to max entries. Entries are kept as a SHA-256 of the two, so that a 256-byte jti costs what a
// short one does, in a map and in a queue in the order they were added: expiries come almost in
// that order (a minute after iats that differ by seconds), so the queue's front is where expired
// entries, and the oldest when full, are.
type replayCache struct {
	mu    sync.Mutex
	max   int
	seen  map[[32]byte]int64 // expiry, Unix nanoseconds
	queue []replayEntry
	head  int
}

type replayEntry struct {
	key   [32]byte
	until int64
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[[32]byte]int64)}
}

// replayVerdict is what record found: a new proof, recorded; one seen before; or no room.
type replayVerdict int

const (
	replayNew replayVerdict = iota
	replaySeen
	replayFull
)

// record records the proof (jkt, jti) until expiry, unless it is there already or the cache is
// full of live proofs: only expired entries make room, never live ones, or a flood of an
// attacker's own valid proofs would make the cache forget a victim's captured one.
func (c *replayCache) record(jkt, jti string, expiry, now time.Time) replayVerdict {
	h := sha256.New()
	h.Write([]byte(jkt))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var k [32]byte
	h.Sum(k[:0])
	at := now.UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.seen[k]; ok && at < until {
		return replaySeen
	}
	for c.head < len(c.queue) {
		front := c.queue[c.head]
		if at < front.until {
			break
		}
		// Only the entry this queue slot added: the key may have been added again since.
		if until, ok := c.seen[front.key]; ok && until == front.until {
			delete(c.seen, front.key)
		}
		c.queue[c.head] = replayEntry{}
		c.head++
	}
	if c.head > len(c.queue)/2 {
		// Compact, so that the queue's array does not grow without end.
		c.queue = append(c.queue[:0], c.queue[c.head:]...)
		c.head = 0
	}
	if len(c.seen) >= c.max {
		return replayFull
	}
	e := replayEntry{key: k, until: expiry.UnixNano()}
	c.seen[k] = e.until
	c.queue = append(c.queue, e)
	return replayNew
}

// dpopChallenge is the WWW-Authenticate of a DPoP refusal (RFC 9449 §7.1).
func dpopChallenge(code string) string {
	c := `DPoP algs="` + strings.Join(dpop.Algorithms(), " ") + `"`
	if code != "" {
		c += `, error="` + code + `"`
	}
	return c
}

// writeDPoPRefusal answers a refused DPoP request, or a bearer request to a route that requires
// DPoP, and reports whether err was one of those.
func (v *Verifier) writeDPoPRefusal(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ErrDPoPNonce):
		if n := v.dpop.currentNonce(v.now()); n != "" {
			w.Header().Set("DPoP-Nonce", n)
		}
		w.Header().Set("WWW-Authenticate", dpopChallenge("use_dpop_nonce"))
		http.Error(w, "the DPoP proof must carry the nonce of the DPoP-Nonce header", http.StatusUnauthorized)
	case errors.Is(err, ErrDPoPProof):
		w.Header().Set("WWW-Authenticate", dpopChallenge("invalid_dpop_proof"))
		http.Error(w, "the DPoP proof is invalid", http.StatusUnauthorized)
	case errors.Is(err, ErrDPoPRequired):
		// No error code: the request carried no DPoP credentials (RFC 6750 §3.1 style); a new
		// bearer token would not help, so the challenge is not Bearer's invalid_token.
		w.Header().Set("WWW-Authenticate", dpopChallenge(""))
		http.Error(w, "a DPoP-bound token is required", http.StatusUnauthorized)
	default:
		return false
	}
	return true
}
