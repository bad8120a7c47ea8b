package m2mauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

func newDPoPKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func thumbprint(t testing.TB, k crypto.Signer) string {
	t.Helper()
	jkt, err := dpop.Thumbprint(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return jkt
}

// boundClaims are goodClaims with cnf.jkt of key.
func boundClaims(t testing.TB, iss string, key crypto.Signer) jwt.MapClaims {
	return with(goodClaims(iss), "cnf", map[string]any{"jkt": thumbprint(t, key)})
}

func proofFor(t testing.TB, key crypto.Signer, method, url string, o dpop.ProofOptions) string {
	t.Helper()
	if o.Now.IsZero() {
		o.Now = t0.Add(time.Minute) // the test verifier's clock
	}
	p, err := dpop.NewProof(key, method, url, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serve sends a request for url through h with the Authorization and DPoP headers given ("" for
// none) and returns the answer.
func serve(h http.Handler, method, url, authorization, proof string, extra ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, url, nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	if proof != "" {
		r.Header.Set("DPoP", proof)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		r.Header.Set(extra[i], extra[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var reached = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if c, ok := ClaimsFromContext(r.Context()); !ok || c.ClientID != "m2m-a" {
		http.Error(w, "no claims", http.StatusInternalServerError)
	}
})

func TestABoundTokenIsAcceptedOnlyWithAValidProofForThisRequestByItsKey(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	v := newTestVerifier(t, srv)
	h := Middleware(v, RequiredScopes("read:users"))(reached)
	key, thief := newDPoPKey(t), newDPoPKey(t)
	token := mint(t, ec, boundClaims(t, srv.URL, key), nil)
	other := mint(t, ec, with(boundClaims(t, srv.URL, key), "jti", "j2"), nil)
	unbound := mint(t, ec, goodClaims(srv.URL), nil)
	const url = "http://example.com/users"
	for sentence, tc := range map[string]struct {
		authorization, proof string
		status               int
		challenge            string
	}{
		"a proof by the bound key for this request is accepted":   {"DPoP " + token, proofFor(t, key, "GET", url+"?page=2", dpop.ProofOptions{AccessToken: token}), 200, ""},
		"the stolen token sent as a bearer token is refused":      {"Bearer " + token, "", 401, `Bearer realm="` + srv.URL + `", error="invalid_token"`},
		"the stolen token with a proof by another key is refused": {"DPoP " + token, proofFor(t, thief, "GET", url, dpop.ProofOptions{AccessToken: token}), 401, `error="invalid_dpop_proof"`},
		"a proof for another URL is refused":                      {"DPoP " + token, proofFor(t, key, "GET", "http://example.com/admin", dpop.ProofOptions{AccessToken: token}), 401, `error="invalid_dpop_proof"`},
		"a proof for another host is refused":                     {"DPoP " + token, proofFor(t, key, "GET", "http://other.example.com/users", dpop.ProofOptions{AccessToken: token}), 401, `error="invalid_dpop_proof"`},
		"a proof for another method is refused":                   {"DPoP " + token, proofFor(t, key, "POST", url, dpop.ProofOptions{AccessToken: token}), 401, `error="invalid_dpop_proof"`},
		"a proof for another token (ath) is refused":              {"DPoP " + token, proofFor(t, key, "GET", url, dpop.ProofOptions{AccessToken: other}), 401, `error="invalid_dpop_proof"`},
		"a proof without ath is refused":                          {"DPoP " + token, proofFor(t, key, "GET", url, dpop.ProofOptions{}), 401, `error="invalid_dpop_proof"`},
		"a proof issued two minutes ago is refused":               {"DPoP " + token, proofFor(t, key, "GET", url, dpop.ProofOptions{AccessToken: token, Now: t0.Add(-time.Minute)}), 401, `error="invalid_dpop_proof"`},
		"the DPoP scheme without a proof is refused":              {"DPoP " + token, "", 401, `error="invalid_dpop_proof"`},
		"an unbound token with the DPoP scheme is refused":        {"DPoP " + unbound, proofFor(t, key, "GET", url, dpop.ProofOptions{AccessToken: unbound}), 401, `DPoP algs="ES256 EdDSA RS256", error="invalid_token"`},
		"an unbound bearer token is still accepted":               {"Bearer " + unbound, "", 200, ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			w := serve(h, "GET", url+"?page=2", tc.authorization, tc.proof)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) {
				t.Fatalf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
			}
		})
	}
}

func TestAVerifiersAuthenticateRefusesABoundTokenThatComesWithoutItsProof(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	v := newTestVerifier(t, srv)
	token := mint(t, ec, boundClaims(t, srv.URL, newDPoPKey(t)), nil)
	if _, err := v.Authenticate(context.Background(), token); !errors.Is(err, ErrDPoPBound) {
		t.Fatalf("Authenticate of a bound token: %v, want ErrDPoPBound", err)
	}
	odd := mint(t, ec, with(goodClaims(srv.URL), "cnf", map[string]any{"jwe": "abc"}), nil)
	if _, err := v.Authenticate(context.Background(), odd); !errors.Is(err, ErrDPoPBound) {
		t.Fatalf("Authenticate of a token with a cnf this package does not know: %v, want ErrDPoPBound", err)
	}
}

func TestAReplayedProofIsRefused(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	v := newTestVerifier(t, srv)
	h := Middleware(v)(reached)
	key := newDPoPKey(t)
	token := mint(t, ec, boundClaims(t, srv.URL, key), nil)
	proof := proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token})
	if w := serve(h, "GET", "http://example.com/", "DPoP "+token, proof); w.Code != 200 {
		t.Fatalf("the first use: %d %s", w.Code, w.Body)
	}
	w := serve(h, "GET", "http://example.com/", "DPoP "+token, proof)
	if w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="invalid_dpop_proof"`) {
		t.Fatalf("the replay: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	fresh := proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token})
	if w := serve(h, "GET", "http://example.com/", "DPoP "+token, fresh); w.Code != 200 {
		t.Fatalf("a fresh proof after the replay: %d %s", w.Code, w.Body)
	}
}

// The replay cache refuses a repeat until it expires, and holds no more than its bound: when it
// is full of live proofs it refuses new ones (ErrDPoPReplayFull) rather than forget live ones,
// which would let anyone with a token of their own flush it and replay a captured proof of
// someone else's (found by the review).
func TestTheReplayCacheRefusesARepeatUntilItExpiresAndNeverForgetsALiveProof(t *testing.T) {
	c := newReplayCache(3)
	exp := t0.Add(time.Minute)
	if c.record("k", "a", exp, t0) != replayNew || c.record("k", "a", exp, t0.Add(30*time.Second)) != replaySeen {
		t.Fatal("a repeat within the proof's lifetime was not refused")
	}
	if c.record("other", "a", exp, t0) != replayNew {
		t.Fatal("the same jti of another key was refused")
	}
	if c.record("k", "a", exp.Add(time.Minute), exp) != replayNew {
		t.Fatal("a jti was refused after its entry expired")
	}
	c.record("victim", "captured", exp.Add(time.Hour), exp)
	for i := range 100 {
		if v := c.record("attacker", string(rune('A'+i)), exp.Add(time.Hour), exp); i > 0 && v != replayFull {
			t.Fatalf("proof %d of a flood was %v with the cache full of live proofs, want full", i, v)
		}
		if n := len(c.seen); n > 3 {
			t.Fatalf("%d entries, the bound is 3", n)
		}
	}
	if c.record("victim", "captured", exp.Add(time.Hour), exp) != replaySeen {
		t.Fatal("a flood made the cache forget a live proof, which could then be replayed")
	}
	if c.record("late", "x", exp.Add(3*time.Hour), exp.Add(2*time.Hour)) != replayNew {
		t.Fatal("a new proof was refused once the entries had expired")
	}
}

func TestARouteThatRequiresDPoPRefusesBearerTokensWithADPoPChallenge(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	v := newTestVerifier(t, srv)
	h := Middleware(v, RequireDPoP())(reached)
	unbound := mint(t, ec, goodClaims(srv.URL), nil)
	for sentence, authorization := range map[string]string{"a bearer token": "Bearer " + unbound, "no token": ""} {
		w := serve(h, "GET", "http://example.com/", authorization, "")
		if got := w.Header().Get("WWW-Authenticate"); w.Code != 401 || got != `DPoP algs="ES256 EdDSA RS256"` {
			t.Fatalf("%s: %d %q, want 401 and a DPoP challenge without an error code", sentence, w.Code, got)
		}
	}
	key := newDPoPKey(t)
	token := mint(t, ec, boundClaims(t, srv.URL, key), nil)
	if w := serve(h, "GET", "http://example.com/", "DPoP "+token, proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token})); w.Code != 200 {
		t.Fatalf("a bound token with its proof: %d %s", w.Code, w.Body)
	}
}

func TestBehindAProxyTheProofMustNameTheConfiguredBaseURLAndForwardedHeadersAreIgnored(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	key := newDPoPKey(t)
	token := mint(t, ec, boundClaims(t, srv.URL, key), nil)
	proof := func(url string) string { return proofFor(t, key, "GET", url, dpop.ProofOptions{AccessToken: token}) }

	proxied := Middleware(newTestVerifier(t, srv, WithDPoPBaseURLs("https://api.example.com/billing/")))(reached)
	// The proxy strips /billing and terminates TLS: the request reaches the process as
	// http://10.0.0.7/invoices.
	if w := serve(proxied, "GET", "http://10.0.0.7/invoices", "DPoP "+token, proof("https://api.example.com/billing/invoices")); w.Code != 200 {
		t.Fatalf("a proof for the external URL: %d %s", w.Code, w.Body)
	}
	if w := serve(proxied, "GET", "http://10.0.0.7/invoices", "DPoP "+token, proof("http://10.0.0.7/invoices")); w.Code != 401 {
		t.Fatalf("a proof for the internal URL, with a base URL configured: %d", w.Code)
	}

	direct := Middleware(newTestVerifier(t, srv))(reached)
	w := serve(direct, "GET", "http://10.0.0.7/invoices", "DPoP "+token, proof("https://api.example.com/invoices"),
		"X-Forwarded-Host", "api.example.com", "X-Forwarded-Proto", "https", "Forwarded", "host=api.example.com;proto=https")
	if w.Code != 401 {
		t.Fatalf("forwarded headers were trusted: %d", w.Code)
	}
}

func TestAVerifierWithNoncesAsksForOneAndAcceptsTheProofThatCarriesIt(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	h := Middleware(newTestVerifier(t, srv, WithDPoPNonces(dpop.NonceSource{Key: []byte("0123456789abcdef0123456789abcdef")})))(reached)
	key := newDPoPKey(t)
	token := mint(t, ec, boundClaims(t, srv.URL, key), nil)
	w := serve(h, "GET", "http://example.com/", "DPoP "+token, proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token}))
	nonce := w.Header().Get("DPoP-Nonce")
	if w.Code != 401 || nonce == "" || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
		t.Fatalf("a proof without a nonce: %d %q nonce %q", w.Code, w.Header().Get("WWW-Authenticate"), nonce)
	}
	if w := serve(h, "GET", "http://example.com/", "DPoP "+token, proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token, Nonce: nonce})); w.Code != 200 {
		t.Fatalf("a proof with the nonce: %d %s", w.Code, w.Body)
	}
	if w := serve(h, "GET", "http://example.com/", "DPoP "+token, proofFor(t, key, "GET", "http://example.com/", dpop.ProofOptions{AccessToken: token, Nonce: "made-up"})); w.Code != 401 {
		t.Fatalf("a proof with a made-up nonce: %d", w.Code)
	}
}

// dpopTokenServer is a token endpoint for a private-key client that binds tokens to the proof's
// key, signed with signer for issuer; with nonce set, it asks for that nonce first.
type dpopTokenServer struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	seenJTI  map[string]bool
}

func newDPoPTokenServer(t *testing.T, signer *signingkeys.Key, issuer func() string, nonce string) *dpopTokenServer {
	s := &dpopTokenServer{seenJTI: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = r.ParseForm()
		// The client is authenticated, and its assertion's jti remembered, before the proof is
		// looked at, as the token server does: a nonce retry needs a new assertion.
		a, _, _ := jwt.NewParser().ParseUnverified(r.PostForm.Get("client_assertion"), jwt.MapClaims{})
		jti, _ := a.Claims.(jwt.MapClaims)["jti"].(string)
		s.mu.Lock()
		replayed := s.seenJTI[jti]
		s.seenJTI[jti] = true
		s.mu.Unlock()
		if jti == "" || replayed {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		o := dpop.VerifyOptions{Method: http.MethodPost, URLs: []string{s.URL + "/token"}}
		if nonce != "" {
			w.Header().Set("DPoP-Nonce", nonce)
			o.Nonce = func(n string) error {
				if n != nonce {
					return dpop.ErrUseNonce
				}
				return nil
			}
		}
		p, err := dpop.Verify(r.Header.Get("DPoP"), o)
		switch {
		case errors.Is(err, dpop.ErrUseNonce):
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"use_dpop_nonce"}`)
			return
		case err != nil:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"invalid_dpop_proof"}`)
			return
		}
		now := time.Now()
		claims := with(with(with(goodClaims(issuer()), "cnf", map[string]any{"jkt": p.JKT}), "iat", now.Unix()), "exp", now.Add(time.Hour).Unix())
		claims["nbf"], claims["jti"] = now.Unix(), p.JTI
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": mint(t, signer, claims, nil), "token_type": "DPoP", "expires_in": 3600})
	}))
	t.Cleanup(s.Close)
	return s
}

func dpopClientSource(t *testing.T, tokenURL string, opts ...TokenSourceOption) *cachingTokenSource {
	t.Helper()
	ts, err := NewPrivateKeyTokenSource(context.Background(), PrivateKeyClient{ClientID: "m2m-a", TokenURL: tokenURL, Issuer: "https://issuer", Key: newDPoPKey(t)}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ts.(*cachingTokenSource)
}

func TestATokenSourceWithDPoPRetriesOnceWithTheTokenServersNonceAndCachesTheTokenAsDPoP(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	ts := newDPoPTokenServer(t, ec, func() string { return "https://issuer" }, "server-nonce-1")
	src := dpopClientSource(t, ts.URL+"/token", DPoP())
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2: one refused for its missing nonce, one with it", n)
	}
	if tok.Type() != "DPoP" {
		t.Fatalf("token type %q, want DPoP", tok.Type())
	}
	if again, err := src.Token(); err != nil || again.AccessToken != tok.AccessToken || again.Type() != "DPoP" || ts.requests.Load() != 2 {
		t.Fatalf("the second Token did not return the cached DPoP token: %v, %d requests", err, ts.requests.Load())
	}
	// The nonce is remembered: the next token request carries it at once.
	src.Invalidate(tok)
	if _, err := src.Token(); err != nil || ts.requests.Load() != 3 {
		t.Fatalf("a new token took %d requests in all (want 3): %v", ts.requests.Load(), err)
	}
	claims, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	cnf, _ := claims.Claims.(jwt.MapClaims)["cnf"].(map[string]any)
	if want := thumbprint(t, src.key.key); cnf["jkt"] != want {
		t.Fatalf("the token is bound to %v, the source's key is %s", cnf["jkt"], want)
	}
}

func TestDPoPEndToEndTheTransportRetriesOnceWithTheResourceServersNonceAndAStolenTokenIsRefused(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	jwks := newJWKSServer(t, ec)
	ts := newDPoPTokenServer(t, ec, func() string { return jwks.URL }, "")
	v := newTestVerifier(t, jwks, WithClock(time.Now), WithDPoPNonces(dpop.NonceSource{Key: []byte("0123456789abcdef0123456789abcdef")}))
	var hits atomic.Int64
	api := httptest.NewServer(func() http.Handler {
		inner := Middleware(v, RequireDPoP(), RequiredScopes("read:users"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, "got "+string(body))
		}))
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); inner.ServeHTTP(w, r) })
	}())
	t.Cleanup(api.Close)

	src := dpopClientSource(t, ts.URL+"/token", DPoP())
	hc := NewClient(context.Background(), src)
	post := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, api.URL+"/users?x=1", strings.NewReader("payload"))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	resp := post()
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "got payload" || hits.Load() != 2 {
		t.Fatalf("first request: %d %q after %d hits, want 200 with the body after 2 (one use_dpop_nonce)", resp.StatusCode, body, hits.Load())
	}
	if resp := post(); resp.StatusCode != 200 || hits.Load() != 3 {
		t.Fatalf("second request: %d after %d hits, want 200 at once with the remembered nonce", resp.StatusCode, hits.Load())
	}

	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	nonce := ""
	for sentence, set := range map[string]func(r *http.Request){
		"as a bearer token": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.AccessToken) },
		"with the thief's own proof": func(r *http.Request) {
			r.Header.Set("Authorization", "DPoP "+tok.AccessToken)
			p, _ := dpop.NewProof(newDPoPKey(t), http.MethodGet, api.URL+"/users", dpop.ProofOptions{AccessToken: tok.AccessToken, Nonce: nonce})
			r.Header.Set("DPoP", p)
		},
	} {
		nonce = v.dpop.currentNonce(time.Now())
		req, _ := http.NewRequest(http.MethodGet, api.URL+"/users", nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("the stolen token %s: %d, want 401", sentence, resp.StatusCode)
		}
	}
}

func TestATransportWithoutTheKeyRefusesToSendADPoPToken(t *testing.T) {
	tr := NewTransport(tokenSourceFunc(func() (*oauth2.Token, error) { return &oauth2.Token{AccessToken: "t", TokenType: "DPoP"}, nil }), nil)
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "no DPoP key") {
		t.Fatalf("sending a DPoP token without its key: %v", err)
	}
}

func TestADPoPTokenThatAResourceServerRefusesInTheDPoPSchemeIsReplacedAndTheRequestRetried(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	ts := newDPoPTokenServer(t, ec, func() string { return "https://issuer" }, "")
	var seen []string
	var mu sync.Mutex
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Header.Get("Authorization"))
		if len(seen) == 1 {
			w.Header().Set("WWW-Authenticate", `DPoP algs="ES256", error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(api.Close)
	hc := NewClient(context.Background(), dpopClientSource(t, ts.URL+"/token", DPoP()))
	resp, err := hc.Get(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != 200 || len(seen) != 2 || seen[0] == seen[1] || !strings.HasPrefix(seen[1], "DPoP ") {
		t.Fatalf("status %d after %d requests (distinct tokens: %v), want 200 after a retry with a new DPoP token", resp.StatusCode, len(seen), len(seen) == 2 && seen[0] != seen[1])
	}
}

func TestDPoPKeyBindsTokensToTheCallersKeyAndRefusesNoKey(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	ts := newDPoPTokenServer(t, ec, func() string { return "https://issuer" }, "")
	mine := newDPoPKey(t)
	tok, err := dpopClientSource(t, ts.URL+"/token", DPoPKey(mine)).Token()
	if err != nil {
		t.Fatal(err)
	}
	claims, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if cnf, _ := claims.Claims.(jwt.MapClaims)["cnf"].(map[string]any); cnf["jkt"] != thumbprint(t, mine) {
		t.Fatalf("the token is bound to %v, not to the caller's key", cnf["jkt"])
	}
	if _, err := NewPrivateKeyTokenSource(context.Background(), PrivateKeyClient{ClientID: "a", TokenURL: ts.URL, Issuer: "i", Key: mine}, DPoPKey(nil)); err == nil {
		t.Fatal("DPoPKey(nil) was accepted")
	}
}
