package tokenserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
)

const (
	testInCluster = "http://m2m-token-server.m2m-system.svc:8080"
	requiresID    = "m2m-requires-dpop"
	requiresPass  = "requires-secret-0123456789abcdefghijklmnopq"
)

var (
	issuerTokenURL    = testIssuer + "/oauth2/token"
	inClusterTokenURL = testInCluster + "/oauth2/token"
)

type dpopFixture struct {
	h     http.Handler
	clock *clocktesting.FakeClock
	key   *signingkeys.Key
	keys  *StaticKeys
}

// dpopServer serves a client that allows DPoP (goodID) and one that requires it, under both doors.
func dpopServer(t testing.TB, nonces bool, keys *StaticKeys, key *signingkeys.Key) *dpopFixture {
	t.Helper()
	if keys == nil {
		key, keys = staticKeys(t, signingkeys.ES256)
	}
	requires := testClient(requiresID, requiresPass)
	requires.Spec.DPoP = &m2mv1alpha1.DPoPPolicy{Required: true}
	clk := clocktesting.NewFakeClock(t0)
	s, err := New(Config{
		IssuerURL: testIssuer, InClusterURL: testInCluster, DPoPNonces: nonces,
		Clients: mapClients{goodID: testClient(goodID, goodSecret), requiresID: seal(requires)},
		Keys:    keys, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &dpopFixture{h: s.Handler(), clock: clk, key: key, keys: keys}
}

// token posts a client-credentials request for id with the DPoP headers given.
func (f *dpopFixture) token(t testing.TB, id, secret string, proofs ...string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(formBody("grant_type", "client_credentials", "client_id", id, "client_secret", secret)))
	r.Header.Set("Content-Type", form)
	for _, p := range proofs {
		r.Header.Add("DPoP", p)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%d %q: %v", w.Code, w.Body.String(), err)
	}
	return w, out
}

func proofKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func proof(t testing.TB, key crypto.Signer, method, url string, o dpop.ProofOptions) string {
	t.Helper()
	if o.Now.IsZero() {
		o.Now = t0
	}
	p, err := dpop.NewProof(key, method, url, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestATokenRequestWithADPoPProofGetsATokenBoundToTheProofsKeyAtEitherDoor(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for sentence, tc := range map[string]struct {
		key crypto.Signer
		url string
	}{
		"a P-256 proof for the issuer's token URL":     {proofKey(t), issuerTokenURL},
		"an Ed25519 proof for the in-cluster door":     {edKey, inClusterTokenURL},
		"a proof whose URL differs only in host case":  {proofKey(t), "https://M2M.example.com/oauth2/token"},
		"a proof whose URL names the default port 443": {proofKey(t), "https://m2m.example.com:443/oauth2/token"},
	} {
		t.Run(sentence, func(t *testing.T) {
			f := dpopServer(t, false, nil, nil)
			w, out := f.token(t, goodID, goodSecret, proof(t, tc.key, http.MethodPost, tc.url, dpop.ProofOptions{}))
			if w.Code != http.StatusOK || out["token_type"] != "DPoP" {
				t.Fatalf("%d %v", w.Code, out)
			}
			jkt, err := dpop.Thumbprint(tc.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			_, claims := parseToken(t, &fixture{key: f.key}, out["access_token"].(string))
			if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != jkt {
				t.Fatalf("cnf %v, want jkt %s", claims["cnf"], jkt)
			}
		})
	}
}

func TestATokenRequestWithoutAProofGetsABearerTokenWithoutCnf(t *testing.T) {
	f := dpopServer(t, true, nil, nil) // nonces on change nothing for a request without a proof
	w, out := f.token(t, goodID, goodSecret)
	if w.Code != http.StatusOK || out["token_type"] != "Bearer" {
		t.Fatalf("%d %v", w.Code, out)
	}
	if _, claims := parseToken(t, &fixture{key: f.key}, out["access_token"].(string)); claims["cnf"] != nil {
		t.Fatalf("a bearer token has cnf %v", claims["cnf"])
	}
}

func TestTheTokenEndpointRefusesDPoPProofsThatAreNotForThisRequest(t *testing.T) {
	key := proofKey(t)
	for sentence, tc := range map[string]struct {
		id, secret string
		proofs     func(t *testing.T) []string
	}{
		"a proof for another server's token URL": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, "https://evil.example.com/oauth2/token", dpop.ProofOptions{})}
		}},
		"a proof for the introspection endpoint": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, testIssuer+"/oauth2/introspect", dpop.ProofOptions{})}
		}},
		"a proof for GET": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodGet, issuerTokenURL, dpop.ProofOptions{})}
		}},
		"a proof made two minutes ago": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Now: t0.Add(-2 * time.Minute)})}
		}},
		"a proof made a minute in the future": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Now: t0.Add(time.Minute)})}
		}},
		"two DPoP headers": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{}), proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{})}
		}},
		"a DPoP header that is not a JWT":                         {goodID, goodSecret, func(*testing.T) []string { return []string{"not-a-proof"} }},
		"no proof from a client whose spec.dpop.required is true": {requiresID, requiresPass, func(*testing.T) []string { return nil }},
		"an empty DPoP header from a client that requires DPoP":   {requiresID, requiresPass, func(*testing.T) []string { return []string{""} }},
		"a proof with a query-less URL of another path on the host": {goodID, goodSecret, func(t *testing.T) []string {
			return []string{proof(t, key, http.MethodPost, testIssuer+"/token", dpop.ProofOptions{})}
		}},
	} {
		t.Run(sentence, func(t *testing.T) {
			f := dpopServer(t, false, nil, nil)
			w, out := f.token(t, tc.id, tc.secret, tc.proofs(t)...)
			if w.Code != http.StatusBadRequest || out["error"] != ErrInvalidDPoPProof || out["access_token"] != nil {
				t.Fatalf("%d %v, want 400 %s", w.Code, out, ErrInvalidDPoPProof)
			}
		})
	}
}

func TestAClientThatRequiresDPoPGetsABoundTokenWithAProof(t *testing.T) {
	f := dpopServer(t, false, nil, nil)
	w, out := f.token(t, requiresID, requiresPass, proof(t, proofKey(t), http.MethodPost, issuerTokenURL, dpop.ProofOptions{}))
	if w.Code != http.StatusOK || out["token_type"] != "DPoP" {
		t.Fatalf("%d %v", w.Code, out)
	}
}

// A replayed proof is refused for as long as it would verify, even for another client of the
// same key; a new proof of the same key is not.
func TestAReplayedDPoPProofIsRefusedWithinItsLifetime(t *testing.T) {
	f := dpopServer(t, false, nil, nil)
	key := proofKey(t)
	p := proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{})
	if w, out := f.token(t, goodID, goodSecret, p); w.Code != http.StatusOK {
		t.Fatalf("first use: %d %v", w.Code, out)
	}
	for _, step := range []struct {
		name       string
		id, secret string
		advance    time.Duration
	}{
		{"at once", goodID, goodSecret, 0},
		{"by another client", requiresID, requiresPass, 0},
		{"at the end of its lifetime", goodID, goodSecret, dpop.DefaultMaxAge},
	} {
		f.clock.Step(step.advance)
		if w, out := f.token(t, step.id, step.secret, p); w.Code != http.StatusBadRequest || out["error"] != ErrInvalidDPoPProof {
			t.Fatalf("replayed %s: %d %v", step.name, w.Code, out)
		}
	}
	fresh := proof(t, key, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Now: f.clock.Now()})
	if w, out := f.token(t, goodID, goodSecret, fresh); w.Code != http.StatusOK {
		t.Fatalf("a new proof of the same key: %d %v", w.Code, out)
	}
}

// With --dpop-nonce, a proof without the server's nonce is answered use_dpop_nonce with a
// DPoP-Nonce header; a proof with it gets a token at this replica and at another one that reads
// the same signing keys; a nonce over two windows old is refused.
func TestWithServerNoncesAProofMustCarryANonceThatEveryReplicaAccepts(t *testing.T) {
	key, keys := staticKeys(t, signingkeys.ES256)
	one := dpopServer(t, true, keys, key)
	other := dpopServer(t, true, keys, key)
	pk := proofKey(t)

	w, out := one.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{}))
	nonce := w.Header().Get("DPoP-Nonce")
	if w.Code != http.StatusBadRequest || out["error"] != ErrUseDPoPNonce || nonce == "" {
		t.Fatalf("a proof without a nonce: %d %v, nonce %q", w.Code, out, nonce)
	}
	for name, f := range map[string]*dpopFixture{"this replica": one, "another replica": other} {
		w, out = f.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Nonce: nonce}))
		if w.Code != http.StatusOK || out["token_type"] != "DPoP" || w.Header().Get("DPoP-Nonce") == "" {
			t.Fatalf("%s: %d %v, nonce %q", name, w.Code, out, w.Header().Get("DPoP-Nonce"))
		}
	}
	w, out = one.token(t, requiresID, requiresPass)
	if w.Code != http.StatusBadRequest || out["error"] != ErrInvalidDPoPProof || w.Header().Get("DPoP-Nonce") == "" {
		t.Fatalf("no proof from a client that requires DPoP: %d %v, nonce %q", w.Code, out, w.Header().Get("DPoP-Nonce"))
	}
	one.clock.Step(2*dpop.DefaultNonceWindow + time.Second)
	w, out = one.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Nonce: nonce, Now: one.clock.Now()}))
	if w.Code != http.StatusBadRequest || out["error"] != ErrUseDPoPNonce || w.Header().Get("DPoP-Nonce") == nonce {
		t.Fatalf("a stale nonce: %d %v, nonce %q", w.Code, out, w.Header().Get("DPoP-Nonce"))
	}
}

// Nonces come from the signing keys, and a server does not hand out one it would not take: the
// nonce of another key set is refused.
func TestANonceOfAnotherSigningKeySetIsRefused(t *testing.T) {
	one := dpopServer(t, true, nil, nil)
	other := dpopServer(t, true, nil, nil)
	pk := proofKey(t)
	w, _ := other.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{}))
	foreign := w.Header().Get("DPoP-Nonce")
	w, out := one.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Nonce: foreign}))
	if foreign == "" || w.Code != http.StatusBadRequest || out["error"] != ErrUseDPoPNonce {
		t.Fatalf("another key set's nonce %q: %d %v", foreign, w.Code, out)
	}
}

func TestTheMetadataListsTheDPoPAlgorithms(t *testing.T) {
	f := dpopServer(t, false, nil, nil)
	r := httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var md Metadata
	if err := json.Unmarshal(w.Body.Bytes(), &md); err != nil {
		t.Fatal(err)
	}
	if strings.Join(md.DPoPSigningAlgValuesSupported, " ") != "ES256 EdDSA RS256" {
		t.Fatalf("dpop_signing_alg_values_supported %v", md.DPoPSigningAlgValuesSupported)
	}
}

// A server nonce lives 15 to 30 seconds, under a proof's minute: a proof captured at one replica
// and replayed at another, which does not share the replay cache, is refused once its nonce is
// over 30 seconds old, although the proof alone would still be fresh (the review found that a
// nonce window of a minute outlived the proof and shortened nothing).
func TestWithServerNoncesACapturedProofDiesWithItsNonceBeforeItsOwnLifetime(t *testing.T) {
	key, keys := staticKeys(t, signingkeys.ES256)
	one := dpopServer(t, true, keys, key)
	other := dpopServer(t, true, keys, key)
	pk := proofKey(t)
	w, _ := one.token(t, goodID, goodSecret, proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{}))
	nonce := w.Header().Get("DPoP-Nonce")
	captured := proof(t, pk, http.MethodPost, issuerTokenURL, dpop.ProofOptions{Nonce: nonce, Now: t0})
	if w, out := one.token(t, goodID, goodSecret, captured); w.Code != http.StatusOK {
		t.Fatalf("the proof with the nonce was refused: %d %v", w.Code, out)
	}
	other.clock.Step(2*dpopNonceWindow + time.Second)
	if w, out := other.token(t, goodID, goodSecret, captured); w.Code == http.StatusOK || out["error"] != ErrUseDPoPNonce {
		t.Fatalf("the captured proof was taken at another replica %v later: %d %v", 2*dpopNonceWindow+time.Second, w.Code, out)
	}
}

// Introspection says that a token is bound (token_type DPoP and its cnf, RFC 9449 §6.2): a
// resource server that introspects must not take a stolen bound token for a bearer token (found
// by the review: the answer said Bearer and dropped cnf).
func TestIntrospectionOfABoundTokenCarriesItsBinding(t *testing.T) {
	f := dpopServer(t, false, nil, nil)
	_, out := f.token(t, goodID, goodSecret, proof(t, proofKey(t), http.MethodPost, issuerTokenURL, dpop.ProofOptions{}))
	tok, _ := out["access_token"].(string)
	r := httptest.NewRequest(http.MethodPost, "/oauth2/introspect", strings.NewReader(formBody("token", tok)))
	r.Header.Set("Content-Type", form)
	r.SetBasicAuth(goodID, goodSecret)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var answer map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
		t.Fatal(err)
	}
	cnf, _ := answer["cnf"].(map[string]any)
	if answer["active"] != true || answer["token_type"] != "DPoP" || cnf["jkt"] == nil {
		t.Fatalf("introspection of a bound token: %v", answer)
	}
}
