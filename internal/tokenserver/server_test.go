package tokenserver

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

func (m mapClients) Candidates(id string) []*m2mv1alpha1.M2MClient {
	if c, ok := m[id]; ok {
		return []*m2mv1alpha1.M2MClient{c}
	}
	return nil
}

// listClients holds any number of clients with one ID, as a cache does when a status was forged.
type listClients []*m2mv1alpha1.M2MClient

func (l listClients) Candidates(id string) []*m2mv1alpha1.M2MClient {
	var out []*m2mv1alpha1.M2MClient
	for _, c := range l {
		if c.Status.ClientID == id {
			out = append(out, c)
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

// newFixtureServer is the Server of newFixture, without an HTTP listener.
func newFixtureServer(t testing.TB) *Server {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: testClient(goodID, goodSecret)}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
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

// One row per error the token endpoint can give.
func TestTheTokenEndpointRefusesBadRequestsWithTheRightOAuthError(t *testing.T) {
	f := newFixture(t, "")
	good := []string{"grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret}
	with := func(extra ...string) string { return formBody(append(append([]string{}, good...), extra...)...) }
	big := strings.Repeat("a", MaxBodyBytes+1)
	for sentence, tc := range map[string]struct {
		call   call
		status int
		code   string
	}{
		"a GET is not allowed":                            {call{method: http.MethodGet}, 405, ErrInvalidRequest},
		"a body over 64 KiB is too large":                 {call{contentType: form, body: with("scope", big)}, 413, ErrInvalidRequest},
		"no Content-Type is refused":                      {call{body: with()}, 400, ErrInvalidRequest},
		"a text/plain body is refused":                    {call{contentType: "text/plain", body: with()}, 400, ErrInvalidRequest},
		"a malformed form body is refused":                {call{contentType: form, body: "grant_type=%zz"}, 400, ErrInvalidRequest},
		"malformed JSON is refused":                       {call{contentType: "application/json", body: `{"grant_type":`}, 400, ErrInvalidRequest},
		"a JSON array is refused":                         {call{contentType: "application/json", body: `["client_credentials"]`}, 400, ErrInvalidRequest},
		"a JSON number as a parameter is refused":         {call{contentType: "application/json", body: `{"client_id": 5}`}, 400, ErrInvalidRequest},
		"a repeated grant_type is refused":                {call{contentType: form, body: with("grant_type", "client_credentials")}, 400, ErrInvalidRequest},
		"a secret in the URL is refused":                  {call{path: "/oauth2/token?client_secret=x", contentType: form, body: with()}, 400, ErrInvalidRequest},
		"Basic and a body secret at once are refused":     {call{contentType: form, body: with(), basicUser: goodID, basicPass: goodSecret}, 400, ErrInvalidRequest},
		"a Bearer Authorization header is refused":        {call{contentType: form, body: with(), authorization: "Bearer abc"}, 400, ErrInvalidRequest},
		"a repeated JSON key is refused, not resolved":    {call{contentType: "application/json", body: `{"client_id":"m2m-nobody","client_id":"` + goodID + `","client_secret":"` + goodSecret + `","grant_type":"client_credentials"}`}, 400, ErrInvalidRequest},
		"a JSON parameter in upper case is refused":       {call{contentType: "application/json", body: `{"CLIENT_ID":"` + goodID + `","client_secret":"` + goodSecret + `","grant_type":"client_credentials"}`}, 400, ErrInvalidRequest},
		"a JSON parameter in mixed case is refused":       {call{contentType: "application/json", body: `{"client_id":"` + goodID + `","client_secret":"` + goodSecret + `","Grant_Type":"password","grant_type":"client_credentials"}`}, 400, ErrInvalidRequest},
		"two JSON objects are refused":                    {call{contentType: "application/json", body: `{"grant_type":"client_credentials"}{}`}, 400, ErrInvalidRequest},
		"Basic and an empty body secret are refused":      {call{contentType: form, body: formBody("grant_type", "client_credentials", "client_secret", ""), basicUser: goodID, basicPass: goodSecret}, 400, ErrInvalidRequest},
		"Basic and an empty JSON secret are refused":      {call{contentType: "application/json", body: `{"grant_type":"client_credentials","client_secret":""}`, basicUser: goodID, basicPass: goodSecret}, 400, ErrInvalidRequest},
		"no credentials at all are an invalid client":     {call{contentType: form, body: formBody("grant_type", "client_credentials")}, 401, ErrInvalidClient},
		"an unknown client is an invalid client":          {call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", "m2m-nobody", "client_secret", goodSecret)}, 401, ErrInvalidClient},
		"a wrong secret is an invalid client":             {call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", "wrong")}, 401, ErrInvalidClient},
		"a disabled client is an invalid client":          {call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", disabledID, "client_secret", disabledPass)}, 401, ErrInvalidClient},
		"a wrong secret in Basic is an invalid client":    {call{contentType: form, body: formBody("grant_type", "client_credentials"), basicUser: goodID, basicPass: "wrong"}, 401, ErrInvalidClient},
		"a malformed Basic header is an invalid client":   {call{contentType: form, body: formBody("grant_type", "client_credentials"), authorization: "Basic !!!"}, 401, ErrInvalidClient},
		"a missing grant_type is refused":                 {call{contentType: form, body: formBody("client_id", goodID, "client_secret", goodSecret)}, 400, ErrInvalidRequest},
		"the password grant is unsupported":               {call{contentType: form, body: formBody("grant_type", "password", "client_id", goodID, "client_secret", goodSecret)}, 400, ErrUnsupportedGrantType},
		"a scope the client lacks is an invalid scope":    {call{contentType: form, body: with("scope", "read:invoices admin")}, 400, ErrInvalidScope},
		"a scope with a backslash is an invalid scope":    {call{contentType: form, body: with("scope", `read\x`)}, 400, ErrInvalidScope},
		"an audience the client lacks is invalid_target":  {call{contentType: form, body: with("audience", "https://evil.example.com")}, 400, ErrInvalidTarget},
		"a relative resource is invalid_target":           {call{contentType: form, body: with("resource", "payments")}, 400, ErrInvalidTarget},
		"a client with no audiences may ask for no other": {call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", bareID, "client_secret", bareSecret, "audience", "https://payments.example.com")}, 400, ErrInvalidTarget},
		"one allowed and one unknown resource is refused": {call{contentType: form, body: with("resource", "https://payments.example.com", "resource", "https://other.example.com")}, 400, ErrInvalidTarget},
	} {
		t.Run(sentence, func(t *testing.T) {
			resp, body := f.do(t, tc.call)
			if resp.StatusCode != tc.status || body["error"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
				t.Fatalf("error response lacks no-store/no-cache: %v", resp.Header)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Fatal("invalid_client without WWW-Authenticate: Basic")
			}
			for _, leak := range []string{goodSecret, disabledPass, "m2m-nobody", "unknown", "disabled", "panic", "goroutine"} {
				if desc, _ := body["error_description"].(string); strings.Contains(desc, leak) {
					t.Fatalf("the description %q leaks %q", desc, leak)
				}
			}
		})
	}
}

func TestUnknownClientWrongSecretAndDisabledClientGetTheSameAnswer(t *testing.T) {
	f := newFixture(t, "")
	var answers []string
	for _, body := range []string{
		formBody("grant_type", "client_credentials", "client_id", "m2m-nobody", "client_secret", goodSecret),
		formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", "wrong-secret"),
		formBody("grant_type", "client_credentials", "client_id", disabledID, "client_secret", disabledPass),
	} {
		resp, out := f.do(t, call{contentType: form, body: body})
		raw, _ := json.Marshal(out)
		answers = append(answers, resp.Status+" "+resp.Header.Get("WWW-Authenticate")+" "+string(raw))
	}
	if answers[0] != answers[1] || answers[1] != answers[2] {
		t.Fatalf("the answers differ:\n%s", strings.Join(answers, "\n"))
	}
}

func parseToken(t *testing.T, f *fixture, raw string) (*jwt.Token, jwt.MapClaims) {
	t.Helper()
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return f.key.Signer().Public(), nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	return tok, claims
}

func TestEveryWayOfSendingCredentialsGetsAnRFC9068Token(t *testing.T) {
	f := newFixture(t, "")
	for sentence, c := range map[string]call{
		"a form body with credentials in it":     {contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)},
		"a JSON body as in Stytch's docs":        {contentType: "application/json; charset=utf-8", body: `{"client_id":"` + goodID + `","client_secret":"` + goodSecret + `","grant_type":"client_credentials"}`},
		"HTTP Basic with a form body":            {contentType: form, body: formBody("grant_type", "client_credentials"), basicUser: goodID, basicPass: goodSecret},
		"HTTP Basic and the same client_id":      {contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID), basicUser: goodID, basicPass: goodSecret},
		"a JSON body with keys it does not know": {contentType: "application/json", body: `{"client_id":"` + goodID + `","client_secret":"` + goodSecret + `","grant_type":"client_credentials","client_name":"x","n":5}`},
	} {
		t.Run(sentence, func(t *testing.T) {
			resp, body := f.do(t, c)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %v", resp.StatusCode, body)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
				t.Fatal("token response lacks no-store/no-cache")
			}
			if body["token_type"] != "Bearer" || body["expires_in"] != float64(900) || body["scope"] != "read:invoices write:payments" {
				t.Fatalf("response %v", body)
			}
			tok, claims := parseToken(t, f, body["access_token"].(string))
			if tok.Header["typ"] != "at+jwt" || tok.Header["kid"] != f.key.KID {
				t.Fatalf("header %v", tok.Header)
			}
			want := map[string]any{
				"iss": testIssuer, "sub": goodID, "client_id": goodID, "scope": "read:invoices write:payments",
				"iat": float64(t0.Unix()), "nbf": float64(t0.Unix()), "exp": float64(t0.Add(15 * time.Minute).Unix()), "team": "billing",
			}
			for k, v := range want {
				if claims[k] != v {
					t.Errorf("claim %s = %v, want %v", k, claims[k], v)
				}
			}
			aud, _ := claims.GetAudience()
			if strings.Join(aud, ",") != "https://payments.example.com,https://ledger.example.com" {
				t.Errorf("aud %v", aud)
			}
			jti, _ := claims["jti"].(string)
			if raw, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(raw) < 16 {
				t.Errorf("jti %q carries fewer than 128 bits", jti)
			}
		})
	}
}

func TestScopeAndAudienceNarrowTheToken(t *testing.T) {
	f := newFixture(t, "https://default.example.com")
	base := []string{"grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret}
	_, body := f.do(t, call{contentType: form, body: formBody(append(base, "scope", "write:payments  write:payments", "resource", "https://ledger.example.com")...)})
	_, claims := parseToken(t, f, body["access_token"].(string))
	if claims["scope"] != "write:payments" || body["scope"] != "write:payments" || claims["aud"] != "https://ledger.example.com" {
		t.Fatalf("scope %v aud %v", claims["scope"], claims["aud"])
	}
	_, body = f.do(t, call{contentType: "application/json", body: `{"client_id":"` + goodID + `","client_secret":"` + goodSecret + `","grant_type":"client_credentials","audience":["https://payments.example.com"]}`})
	_, claims = parseToken(t, f, body["access_token"].(string))
	if claims["aud"] != "https://payments.example.com" {
		t.Fatalf("aud %v", claims["aud"])
	}
	// A client with no audiences gets the server's default, and no scopes at all.
	_, body = f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", bareID, "client_secret", bareSecret)})
	_, claims = parseToken(t, f, body["access_token"].(string))
	if claims["aud"] != "https://default.example.com" || claims["scope"] != "" || body["expires_in"] != float64(3600) {
		t.Fatalf("aud %v scope %q expires_in %v", claims["aud"], claims["scope"], body["expires_in"])
	}
}

// A client that names no audience, like the client in Stytch's M2M guide, gets a token on a server
// with default settings: its audience is the issuer. --default-audience replaces it, and then the
// issuer is no longer an audience such a client may ask for.
func TestAClientWithNoAudiencesGetsTheDefaultAudienceWhichIsTheIssuerUnlessConfigured(t *testing.T) {
	bare := formBody("grant_type", "client_credentials", "client_id", bareID, "client_secret", bareSecret)
	for sentence, tc := range map[string]struct {
		defaultAudience string
		body            string
		status          int
		aud             string
	}{
		"with no default configured, the token is for the issuer":          {"", bare, 200, testIssuer},
		"asking for the issuer by name gives the same token":               {"", bare + "&audience=" + url.QueryEscape(testIssuer), 200, testIssuer},
		"a configured default audience replaces the issuer":                {"https://default.example.com", bare, 200, "https://default.example.com"},
		"with a configured default, the issuer is not an allowed audience": {"https://default.example.com", bare + "&audience=" + url.QueryEscape(testIssuer), 400, ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			f := newFixture(t, tc.defaultAudience)
			resp, body := f.do(t, call{contentType: form, body: tc.body})
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				if body["error"] != ErrInvalidTarget {
					t.Fatalf("error %v, want %s", body["error"], ErrInvalidTarget)
				}
				return
			}
			_, claims := parseToken(t, f, body["access_token"].(string))
			if claims["aud"] != tc.aud {
				t.Fatalf("aud %v, want %q", claims["aud"], tc.aud)
			}
		})
	}
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

func TestJWKSHasTheActiveKeyAnETagAndMaxAge(t *testing.T) {
	f := newFixture(t, "")
	resp, body := f.do(t, call{method: http.MethodGet, path: "/.well-known/jwks.json"})
	keys, _ := body["keys"].([]any)
	if resp.StatusCode != 200 || len(keys) != 1 || keys[0].(map[string]any)["kid"] != f.key.KID {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("headers %v", resp.Header)
	}
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", etag)
	again, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation got %d, want 304", again.StatusCode)
	}
}

func TestMetadataAdvertisesURLsDerivedFromTheIssuer(t *testing.T) {
	f := newFixture(t, "")
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, body := f.do(t, call{method: http.MethodGet, path: path})
		if resp.StatusCode != 200 || body["issuer"] != testIssuer || body["token_endpoint"] != testIssuer+"/oauth2/token" ||
			body["jwks_uri"] != testIssuer+"/.well-known/jwks.json" || body["introspection_endpoint"] != testIssuer+"/oauth2/introspect" {
			t.Fatalf("%s: %v", path, body)
		}
		grants, _ := body["grant_types_supported"].([]any)
		if len(grants) != 1 || grants[0] != "client_credentials" {
			t.Fatalf("grant types %v", grants)
		}
	}
}

func TestIntrospectionSaysActiveOnlyForAValidTokenOfAnEnabledClient(t *testing.T) {
	f := newFixture(t, "")
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	token := body["access_token"].(string)
	introspect := func(tok string) (int, map[string]any) {
		resp, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", tok), basicUser: goodID, basicPass: goodSecret})
		return resp.StatusCode, out
	}
	code, out := introspect(token)
	if code != 200 || out["active"] != true || out["client_id"] != goodID || out["scope"] != "read:invoices write:payments" {
		t.Fatalf("%d %v", code, out)
	}
	parts := strings.Split(token, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"client_id":"m2m-good","iss":"`+testIssuer+`","exp":9999999999}`)) + "." + parts[2]
	for sentence, tok := range map[string]string{
		"a tampered payload": tampered,
		"garbage":            "not-a-jwt",
	} {
		if code, out := introspect(tok); code != 200 || len(out) != 1 || out["active"] != false {
			t.Fatalf("%s: %d %v, want exactly {active: false}", sentence, code, out)
		}
	}
	f.clock.Step(16 * time.Minute)
	if _, out := introspect(token); out["active"] != false {
		t.Fatalf("an expired token is active: %v", out)
	}
	resp, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", token)})
	if resp.StatusCode != 401 || out["error"] != ErrInvalidClient {
		t.Fatalf("an unauthenticated caller got %d %v", resp.StatusCode, out)
	}
}

func TestIntrospectionSaysInactiveOnceTheClientIsDisabledOrDeleted(t *testing.T) {
	clients := mapClients{goodID: testClient(goodID, goodSecret), bareID: testClient(bareID, bareSecret)}
	f := serve(t, signingkeys.EdDSA, clients)
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	token := body["access_token"].(string)
	active := func() any {
		_, out := f.do(t, call{path: "/oauth2/introspect", contentType: form, body: formBody("token", token), basicUser: bareID, basicPass: bareSecret})
		return out["active"]
	}
	if active() != true {
		t.Fatal("a fresh token is inactive")
	}
	clients[goodID].Spec.Disabled = true
	if active() != false {
		t.Fatal("a disabled client's token is still active")
	}
	delete(clients, goodID)
	if active() != false {
		t.Fatal("a deleted client's token is still active")
	}
}

// FuzzParseRequest feeds arbitrary bodies, content types and Authorization headers to the
// request parser: it must never panic, and must either parse or give an OAuth error.
func FuzzParseRequest(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=a&client_secret=b&scope=x%20y", "")
	f.Add("application/json", `{"client_id":"a","client_secret":"b","audience":["x","y"],"resource":"https://r"}`, "")
	f.Add("application/json", `{"audience": 5}`, "Basic YTpi")
	f.Add("multipart/form-data; boundary=x", "--x--", "Bearer t")
	f.Fuzz(func(t *testing.T, contentType, body, authorization string) {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		if authorization != "" {
			r.Header.Set("Authorization", authorization)
		}
		req, bad := parseRequest(httptest.NewRecorder(), r)
		if (req == nil) == (bad == nil) {
			t.Fatalf("got request %v and error %v; want exactly one", req, bad)
		}
		if bad != nil && (bad.status < 400 || bad.status >= 500 || bad.Code == "") {
			t.Fatalf("error %+v is not a 4xx OAuth error", bad)
		}
		if req != nil {
			for _, s := range req.scopes {
				if !validScopeToken(s) {
					t.Fatalf("scope %q passed parsing", s)
				}
			}
		}
	})
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

// A client stored before the admission policy (or in a cluster without it) may carry tokenClaims
// that name reserved claims in another case. Decoders that match names ignoring case read the
// last of "sub" and "SUB": the token server drops such names, so golang-jwt's struct claims read
// the real subject, client ID, scope and expiry.
func TestReservedClaimNamesInAnyCaseNeverReachAToken(t *testing.T) {
	sneaky := testClient(goodID, goodSecret)
	sneaky.Spec.TokenClaims = m2mv1alpha1.TokenClaims{
		"SUB": {Raw: []byte(`"m2m-victim"`)}, "Client_ID": {Raw: []byte(`"m2m-victim"`)},
		"EXP": {Raw: []byte(`4102444800`)}, "Scope": {Raw: []byte(`"admin:*"`)},
		"Iss": {Raw: []byte(`"https://evil.example.com"`)}, "team": {Raw: []byte(`"billing"`)},
		"ſcope": {Raw: []byte(`"admin:*"`)}, // Go's decoder folds the long s into "scope"
	}
	f := serve(t, signingkeys.ES256, mapClients{goodID: sneaky})
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	raw, _ := body["access_token"].(string)

	var claims struct {
		jwt.RegisteredClaims
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
		Team     string `json:"team"`
	}
	if _, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return f.key.Signer().Public(), nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return t0 })); err != nil {
		t.Fatal(err)
	}
	if claims.Subject != goodID || claims.ClientID != goodID || claims.Scope != "read:invoices write:payments" ||
		claims.Issuer != testIssuer || !claims.ExpiresAt.Time.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("a reserved claim was overridden: sub %q client_id %q scope %q iss %q exp %v", claims.Subject, claims.ClientID, claims.Scope, claims.Issuer, claims.ExpiresAt)
	}
	if claims.Team != "billing" {
		t.Fatalf("the client's own claim was dropped too: team %q", claims.Team)
	}
}
