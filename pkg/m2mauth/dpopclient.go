package m2mauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"golang.org/x/oauth2"

	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

// tokenTypeDPoP is the token_type of a DPoP-bound token (RFC 9449 §5).
const tokenTypeDPoP = "DPoP"

// maxNonceOrigins bounds how many servers' nonces a DPoP key remembers: a client talks to a few,
// and a redirect to many others must not grow the map without end.
const maxNonceOrigins = 64

// DPoP makes the token source ask for DPoP-bound tokens (RFC 9449) with a P-256 key (ES256) it
// generates in memory when it is made: the key never leaves the process, and every process, and
// every source, has its own. Each token request carries a fresh proof; NewClient and NewTransport
// then send each request with Authorization: DPoP and a fresh proof for it, so that the token is
// of no use to whoever copies it without the key. A token server that does not support DPoP
// answers with a bearer token, which is then sent as one.
//
// The private_key of a key-pair client's Secret is not used as the DPoP key: whoever can read it
// can get tokens of their own, so binding tokens to it protects nothing that a key in memory does
// not, while it would tie the binding to the Secret's rotation and put the key that authenticates
// the client into every request's proof signature path.
func DPoP() TokenSourceOption {
	return func(c *tokenSourceConfig) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			c.bad = append(c.bad, "generating a DPoP key: "+err.Error())
			return
		}
		c.dpop = &dpopKey{key: k}
	}
}

// DPoPKey is DPoP with key, which the caller holds (a P-256, Ed25519 or RSA key, in memory or
// behind a crypto.Signer such as a KMS): for a client whose tokens must stay bound to the same
// key across restarts. Its Sign is called for every token and resource request.
func DPoPKey(key crypto.Signer) TokenSourceOption {
	return func(c *tokenSourceConfig) {
		if key == nil {
			c.bad = append(c.bad, "DPoPKey was given no key")
			return
		}
		if _, err := dpop.Thumbprint(key.Public()); err != nil {
			c.bad = append(c.bad, "DPoPKey: "+err.Error())
			return
		}
		c.dpop = &dpopKey{key: key}
	}
}

// dpopKey is a token source's DPoP key and the latest nonce each server sent (RFC 9449 §8, §9),
// by origin: the token server's and each resource server's are different.
type dpopKey struct {
	key crypto.Signer

	mu     sync.Mutex
	nonces map[string]string
}

func origin(r *http.Request) string {
	return strings.ToLower(r.URL.Scheme + "://" + r.URL.Host)
}

// proof makes a proof for r, with the origin's latest nonce and, for a resource request, the
// token's hash.
func (k *dpopKey) proof(r *http.Request, accessToken string) (string, error) {
	k.mu.Lock()
	nonce := k.nonces[origin(r)]
	k.mu.Unlock()
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	p, err := dpop.NewProof(k.key, method, r.URL.String(), dpop.ProofOptions{Nonce: nonce, AccessToken: accessToken})
	if err != nil {
		return "", fmt.Errorf("m2mauth: making a DPoP proof: %w", err)
	}
	return p, nil
}

// remember keeps the nonce of resp's DPoP-Nonce header, if it has one, for the next proof to
// the origin of r, and reports whether it had one.
func (k *dpopKey) remember(r *http.Request, resp *http.Response) bool {
	n := resp.Header.Get("DPoP-Nonce")
	if n == "" {
		return false
	}
	o := origin(r)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nonces == nil {
		k.nonces = map[string]string{}
	}
	if _, known := k.nonces[o]; !known && len(k.nonces) >= maxNonceOrigins {
		clear(k.nonces) // a server whose nonce was dropped asks again, and is retried once
	}
	k.nonces[o] = n
	return true
}

// proofTransport adds a fresh DPoP proof to each token request and remembers the token server's
// nonces.
type proofTransport struct {
	base http.RoundTripper
	key  *dpopKey
}

func (t *proofTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p, err := t.key.proof(req, "")
	if err != nil {
		closeBody(req)
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("DPoP", p)
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		t.key.remember(r, resp)
	}
	return resp, err
}

// withProofs returns ctx with its oauth2.HTTPClient's transport wrapped in a proofTransport.
func withProofs(ctx context.Context, key *dpopKey) context.Context {
	hc, _ := ctx.Value(oauth2.HTTPClient).(*http.Client)
	if hc == nil {
		hc = http.DefaultClient
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *hc
	c.Transport = &proofTransport{base: base, key: key}
	return context.WithValue(ctx, oauth2.HTTPClient, &c)
}

// useNonce reports whether err is a token server's use_dpop_nonce answer (RFC 9449 §8).
func useNonce(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "use_dpop_nonce"
}

// dpopKeyHolder is a token source with a DPoP key.
type dpopKeyHolder interface {
	dpopKey() *dpopKey
}

// refusesNonce reports whether resp is a resource server's 401 use_dpop_nonce (RFC 9449 §9).
func refusesNonce(resp *http.Response) bool {
	return resp.Header.Get("DPoP-Nonce") != "" && dpopError(resp) == "use_dpop_nonce"
}

func isDPoP(tok *oauth2.Token) bool { return strings.EqualFold(tok.TokenType, tokenTypeDPoP) }

// sendDPoP sends r, a copy the transport owns, with tok and a fresh proof for r and tok, and
// keeps the nonce the answer carries.
func (t *transport) sendDPoP(r *http.Request, tok *oauth2.Token) (*http.Response, error) {
	if t.key == nil {
		closeBody(r)
		return nil, errors.New("m2mauth: the token is DPoP-bound and the token source holds no DPoP key")
	}
	p, err := t.key.proof(r, tok.AccessToken)
	if err != nil {
		closeBody(r)
		return nil, err
	}
	r.Header.Set("Authorization", tokenTypeDPoP+" "+tok.AccessToken)
	r.Header.Set("DPoP", p)
	resp, err := t.current().RoundTrip(r)
	if err == nil {
		t.key.remember(r, resp)
	}
	return resp, err
}

// retryWithNonce sends req once more after a resource server's use_dpop_nonce, whose nonce
// sendDPoP has kept, when its body can be sent again; otherwise it returns the refusal, and the
// next request carries the nonce.
func (t *transport) retryWithNonce(req *http.Request, resp *http.Response, tok *oauth2.Token) (*http.Response, error) {
	body := req.Body
	switch {
	case req.GetBody != nil:
		b, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		body = b
	case body != nil && body != http.NoBody:
		return resp, nil
	}
	discard(resp)
	return t.send(req, body, tok)
}

// refusesDPoPToken reports whether resp refuses a DPoP-bound token as invalid in the DPoP scheme
// (RFC 9449 §7.1); refusesToken reads the Bearer scheme's.
func refusesDPoPToken(resp *http.Response) bool { return dpopError(resp) == "invalid_token" }

// dpopError is the error code of a 401's first DPoP challenge, "" without one.
func dpopError(resp *http.Response) string {
	if resp.StatusCode != http.StatusUnauthorized {
		return ""
	}
	cs := parseChallenges(resp.Header.Values("WWW-Authenticate"))
	if i := slices.IndexFunc(cs, func(c challenge) bool { return c.is("DPoP") }); i >= 0 {
		return cs[i].params["error"]
	}
	return ""
}
