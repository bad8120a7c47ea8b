package tokenserver

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"net/http"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// DPoP error codes (RFC 9449 §5 and §8).
const (
	ErrInvalidDPoPProof = "invalid_dpop_proof"
	ErrUseDPoPNonce     = "use_dpop_nonce"
)

// dpopNonceHeader carries the server's nonce (RFC 9449 §8).
const dpopNonceHeader = "DPoP-Nonce"

// dpopReplaySlack keeps a proof's entry in the replay cache a little past the moment Verify
// starts to refuse it as too old, so that no rounding lets it through between the two.
const dpopReplaySlack = time.Second

// dpopNonceWindow is the window of the server's DPoP nonces: one is accepted in its window and
// the next, 15 to 30 seconds. It must be well under a proof's lifetime (a minute, plus the clock
// skew), or a nonce would not shorten the replay of a captured proof at another replica, which is
// its point. Every answer to a request with a proof carries a fresh nonce, so only a client idle
// for longer pays one more round trip.
const dpopNonceWindow = 15 * time.Second

// dpopNonceInfo separates the nonce key from every other use of the signing key's material.
const dpopNonceInfo = "m2m-operator DPoP nonce key v1"

// dpopNonceSources are the nonce sources of a key set: one per signing key, the active key's
// first. Each key is derived with HKDF from the signing key's private key. Every replica reads
// the same Secret, so every replica derives the same nonce keys without sharing any state; the
// signing keys are chosen over the status MAC keys because a server that can issue at all has
// them, while status keys are absent until a manager that writes them has run. Nonces of every
// key of the set are accepted, so that a rotation, which replicas load a moment apart, does not
// invalidate the nonces clients hold; the active key's are the ones handed out.
func dpopNonceSources(set *signingkeys.Set) []dpop.NonceSource {
	var out []dpop.NonceSource
	active := set.Active()
	for _, k := range set.Keys {
		key, err := hkdf.Key(sha256.New, k.PrivateKey, []byte(k.KID), dpopNonceInfo, 32)
		if err != nil || len(k.PrivateKey) == 0 {
			continue
		}
		src := dpop.NonceSource{Key: key, Window: dpopNonceWindow}
		if k == active {
			out = append([]dpop.NonceSource{src}, out...)
		} else {
			out = append(out, src)
		}
	}
	return out
}

// currentDPoPNonce is the nonce a client should put in its next proof; "" without keys.
func (st *keyState) currentDPoPNonce(now time.Time) string {
	if st == nil || len(st.dpopNonces) == 0 {
		return ""
	}
	return st.dpopNonces[0].Current(now)
}

// checkDPoPNonce accepts a nonce current under any key of the set.
func (st *keyState) checkDPoPNonce(nonce string, now time.Time) error {
	if st == nil || len(st.dpopNonces) == 0 {
		return dpop.ErrUseNonce
	}
	var err error
	for _, src := range st.dpopNonces {
		if err = src.Check(nonce, now); err == nil {
			return nil
		}
	}
	return err
}

// dpopTokenURLs are the htu values a token request's proof may name: the token URL under each of
// the server's doors (the issuer's, the in-cluster one) and, during a move, the previous
// issuer's, which still routes here.
func dpopTokenURLs(cfg Config) []string {
	urls := []string{issuer.TokenURL(cfg.IssuerURL)}
	for _, u := range []string{cfg.InClusterURL, cfg.PreviousIssuerURL} {
		if u != "" && u != cfg.IssuerURL {
			urls = append(urls, issuer.TokenURL(u))
		}
	}
	return urls
}

// dpopBinding checks the DPoP proof of an authenticated client's token request and returns the
// thumbprint of its key, which the token is bound to, or "" for a request without a proof that
// the client allows. With server nonces on, every answer it takes part in carries a fresh nonce.
func (s *Server) dpopBinding(w http.ResponseWriter, r *http.Request, client *CachedClient) (string, *oauthError) {
	proofs := r.Header.Values("DPoP")
	if len(proofs) == 0 {
		if client.Spec.DPoP != nil && client.Spec.DPoP.Required {
			s.offerDPoPNonce(w)
			return "", newError(reasonDPoPRequired, "the client requires DPoP: send a DPoP proof with the token request")
		}
		return "", nil
	}
	s.offerDPoPNonce(w)
	if len(proofs) > 1 {
		return "", newError(reasonDPoPInvalid, "send one DPoP header")
	}
	now := s.cfg.Clock.Now()
	opts := dpop.VerifyOptions{Method: http.MethodPost, URLs: s.dpopURLs, Now: now}
	if s.cfg.DPoPNonces {
		st := s.cfg.Keys.current()
		opts.Nonce = func(n string) error { return st.checkDPoPNonce(n, now) }
	}
	p, err := dpop.Verify(proofs[0], opts)
	switch {
	case errors.Is(err, dpop.ErrUseNonce):
		return "", newError(reasonDPoPNonce, "the DPoP proof must carry the nonce of the DPoP-Nonce header")
	case err != nil:
		return "", newError(reasonDPoPInvalid, "the DPoP proof is not valid for this request")
	}
	switch s.dpopReplays.record(client.Namespace, "dpop\x00"+p.JKT, p.JTI, p.Until.Add(dpopReplaySlack), now) {
	case replaySeen:
		return "", newError(reasonDPoPReplayed, "the DPoP proof was used before: make a new proof for each request")
	case replayFull:
		return "", newError(reasonDPoPReplayFull, "this replica cannot remember more DPoP proofs of the client's namespace now; retry shortly")
	}
	return p.JKT, nil
}

// offerDPoPNonce sends the current nonce when the server requires nonces.
func (s *Server) offerDPoPNonce(w http.ResponseWriter) {
	if !s.cfg.DPoPNonces {
		return
	}
	if n := s.cfg.Keys.current().currentDPoPNonce(s.cfg.Clock.Now()); n != "" {
		w.Header().Set(dpopNonceHeader, n)
	}
}
