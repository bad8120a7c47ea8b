package tokenserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const (
	testIssuer   = "https://m2m.example.com"
	goodID       = "m2m-good"
	goodSecret   = "good-secret-0123456789abcdefghijklmnopqrstuv"
	disabledID   = "m2m-disabled"
	disabledPass = "disabled-secret-0123456789abcdefghijklmnopq"
	bareID       = "m2m-bare"
	bareSecret   = "bare-secret-0123456789abcdefghijklmnopqrstuv"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// mapClients are the clients of a test by status.clientID; a key holds one client, or several
// in listClients.
type mapClients map[string]*m2mv1alpha1.M2MClient

// Candidates converts the client as the cache does, at every call: a test may change a client
// between requests.
func (m mapClients) Candidates(id string) []*CachedClient {
	if c, ok := m[id]; ok {
		return []*CachedClient{NewCachedClient(c)}
	}
	return nil
}

// cachedClients are clients as the cache holds them, by status.clientID: converted once, so
// that their memo of MAC verdicts lasts across requests.
type cachedClients map[string]*CachedClient

func (m cachedClients) Candidates(id string) []*CachedClient {
	if c, ok := m[id]; ok {
		return []*CachedClient{c}
	}
	return nil
}

// listClients holds any number of clients with one ID, as a cache does when a status was forged.
type listClients []*m2mv1alpha1.M2MClient

func (l listClients) Candidates(id string) []*CachedClient {
	var out []*CachedClient
	for _, c := range l {
		if c.Status.ClientID == id {
			out = append(out, NewCachedClient(c))
		}
	}
	return out
}

// testStatusKeys authenticate the test clients' status, and are enforced, as after any
// manager of this version has run.
var testStatusKeys = func() *statusmac.Set {
	k, err := statusmac.Generate(statusmac.StateActive, t0)
	if err != nil {
		panic(err)
	}
	return &statusmac.Set{Keys: []*statusmac.Key{k}, EnforcedSince: &t0}
}()

// seal authenticates c's status as the manager does.
func seal(c *m2mv1alpha1.M2MClient) *m2mv1alpha1.M2MClient {
	if err := testStatusKeys.Seal(c); err != nil {
		panic(err)
	}
	return c
}

func testClient(id, secret string) *m2mv1alpha1.M2MClient {
	return seal(&m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Name: id, Namespace: "ns", UID: types.UID("uid-" + id)},
		Spec: m2mv1alpha1.M2MClientSpec{
			Scopes:      []m2mv1alpha1.Scope{"read:invoices", "write:payments"},
			Audiences:   []m2mv1alpha1.Audience{"https://payments.example.com", "https://ledger.example.com"},
			TokenTTL:    &metav1.Duration{Duration: 15 * time.Minute},
			TokenClaims: m2mv1alpha1.TokenClaims{"team": {Raw: []byte(`"billing"`)}},
		},
		Status: m2mv1alpha1.M2MClientStatus{ClientID: id, AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(secret)}}},
	})
}

type fixture struct {
	srv   *httptest.Server
	key   *signingkeys.Key
	clock *clocktesting.FakeClock
}

// staticKeys is a key set with one active key of alg.
func staticKeys(t testing.TB, alg signingkeys.Algorithm) (*signingkeys.Key, *StaticKeys) {
	t.Helper()
	key, err := signingkeys.Generate(alg, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewStaticKeys(&signingkeys.Set{Keys: []*signingkeys.Key{key}}, testStatusKeys, t0)
	if err != nil {
		t.Fatal(err)
	}
	return key, keys
}

// newFixtureServer is the Server of newFixture, with the issuance limit limit, without an HTTP
// listener. Its client is converted once, as the cache holds it.
func newFixtureServer(t testing.TB, limit IssuanceLimit) *Server {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: cachedClients{goodID: NewCachedClient(testClient(goodID, goodSecret))}, Keys: keys, Clock: clocktesting.NewFakeClock(t0), IssuanceLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t testing.TB, defaultAudience string) *fixture {
	t.Helper()
	key, keys := staticKeys(t, signingkeys.ES256)
	disabled := testClient(disabledID, disabledPass)
	disabled.Spec.Disabled = true
	bare := testClient(bareID, bareSecret)
	bare.Spec.Audiences = nil
	bare.Spec.Scopes = nil
	bare.Spec.TokenTTL = nil
	clk := clocktesting.NewFakeClock(t0)
	s, err := New(Config{
		IssuerURL:       testIssuer,
		DefaultAudience: defaultAudience,
		Clients:         mapClients{goodID: testClient(goodID, goodSecret), disabledID: disabled, bareID: bare},
		Keys:            keys,
		Clock:           clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, key: key, clock: clk}
}

// serve runs a Server with one active key of alg and clients, for tests that need clients of
// their own.
func serve(t testing.TB, alg signingkeys.Algorithm, clients ClientSource) *fixture {
	t.Helper()
	key, keys := staticKeys(t, alg)
	clk := clocktesting.NewFakeClock(t0)
	s, err := New(Config{IssuerURL: testIssuer, Clients: clients, Keys: keys, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, key: key, clock: clk}
}

type call struct {
	method, path, contentType, body, basicUser, basicPass, authorization string
}

func (f *fixture) do(t testing.TB, c call) (*http.Response, map[string]any) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/oauth2/token"
	}
	req, err := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.basicUser != "" {
		req.SetBasicAuth(url.QueryEscape(c.basicUser), url.QueryEscape(c.basicPass))
	}
	if c.authorization != "" {
		req.Header.Set("Authorization", c.authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp, out
}

const form = "application/x-www-form-urlencoded"

func formBody(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// A default audience that no spec.audiences entry could hold, or a server with no issuer, would
// put a meaningless "aud" in tokens: the server refuses to start instead.
func TestAServerWithABadDefaultAudienceOrNoIssuerDoesNotStart(t *testing.T) {
	for sentence, cfg := range map[string]Config{
		"a blank default audience":              {IssuerURL: testIssuer, DefaultAudience: " "},
		"a default audience with a space":       {IssuerURL: testIssuer, DefaultAudience: "https://a b"},
		"a default audience with a NUL":         {IssuerURL: testIssuer, DefaultAudience: "https://a\x00"},
		"a default audience of 513 characters":  {IssuerURL: testIssuer, DefaultAudience: "https://" + strings.Repeat("a", 505)},
		"no issuer, which would be the default": {IssuerURL: ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// The metrics name clients and say why each failed: the token port must not serve them, or any
// caller could learn which clients exist (docs/security.md). They have their own address.
func TestTheTokenPortDoesNotServeMetrics(t *testing.T) {
	f := newFixture(t, "")
	resp, _ := f.do(t, call{method: http.MethodGet, path: "/metrics"})
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on the token port answered %d, want 404", resp.StatusCode)
	}
}

// sameClient reports whether got is want as the cache holds it.
func sameClient(got *CachedClient, want *m2mv1alpha1.M2MClient) bool {
	return got != nil && got.Namespace == want.Namespace && got.Name == want.Name && got.UID == want.UID
}
