package tokenserver

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/golang-jwt/jwt/v5"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

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

// Claims over MaxTokenClaimsBytes never reach a token: the cache drops them (and marks the client),
// and a client whose claims reach the server some other way is refused when they are encoded.
func TestAClientWhoseClaimsAreTooLargeGetsNoToken(t *testing.T) {
	big := m2mv1alpha1.TokenClaims{"blob": {Raw: []byte(`"` + strings.Repeat("x", m2mv1alpha1.MaxTokenClaimsBytes) + `"`)}}
	fits := m2mv1alpha1.TokenClaims{"blob": {Raw: []byte(`"` + strings.Repeat("x", m2mv1alpha1.MaxTokenClaimsBytes-20) + `"`)}}

	cached := testClient(goodID, goodSecret)
	cached.Spec.TokenClaims = big
	converted := NewCachedClient(cached)
	if converted.Spec.TokenClaims != nil || converted.claims != claimsOverBound {
		t.Fatal("the cache kept claims over the bound, or did not mark the client")
	}
	uncached := NewCachedClient(testClient(goodID, goodSecret))
	uncached.Spec.TokenClaims = big
	fitting := testClient("m2m-fitting", goodSecret)
	fitting.Spec.TokenClaims = fits
	for name, c := range map[string]*CachedClient{"a cached client": converted, "a client not converted by the cache": uncached} {
		f := serve(t, signingkeys.ES256, cachedClients{goodID: c})
		resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
		if resp.StatusCode != http.StatusBadRequest || body["error"] != ErrUnauthorizedClient {
			t.Fatalf("%s with claims over the bound: %d %v, want 400 unauthorized_client", name, resp.StatusCode, body)
		}
	}
	f := serve(t, signingkeys.ES256, mapClients{"m2m-fitting": fitting})
	if resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", "m2m-fitting", "client_secret", goodSecret)}); resp.StatusCode != http.StatusOK {
		t.Fatalf("claims just under the bound: %d %v", resp.StatusCode, body)
	}
}

// The values that status records as acted on are the manager's alone; an object stored before
// they were bounded may hold 120 KiB in each. The cache (CachedClient) has no field for them, and
// a client with them gets its token: the token server never reads them.
func TestTheCacheKeepsNoValueActedOnAndAClientWithoutThemGetsItsToken(t *testing.T) {
	long := strings.Repeat("x", 120<<10)
	cached := testClient(goodID, goodSecret)
	cached.Spec.Rotation = m2mv1alpha1.RotationPolicy{Trigger: "v1", RevokeTrigger: "leak-1"}
	cached.Status.LastRotationTrigger, cached.Status.LastRotateAnnotation = long, long
	cached.Status.LastRevokeTrigger, cached.Status.LastRevokeAnnotation = long, long
	f := serve(t, signingkeys.ES256, mapClients{goodID: cached})
	if resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a client with them: %d %v", resp.StatusCode, body)
	}
}

// A tokenClaims string that names a trustedMetadata entry reaches the token rendered: the cache
// renders it when the object arrives and keeps no trustedMetadata.
func TestATemplatedClaimReachesTheTokenRendered(t *testing.T) {
	c := testClient(goodID, goodSecret)
	c.Spec.TrustedMetadata = map[string]apiextensionsv1.JSON{"api_version": {Raw: []byte(`"v2"`)}}
	c.Spec.TokenClaims = m2mv1alpha1.TokenClaims{"version": {Raw: []byte(`"api-${api_version}"`)}}
	f := serve(t, signingkeys.ES256, cachedClients{goodID: NewCachedClient(c)})
	_, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	raw, _ := body["access_token"].(string)
	var claims struct {
		jwt.RegisteredClaims
		Version string `json:"version"`
	}
	if _, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return f.key.Signer().Public(), nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return t0 })); err != nil {
		t.Fatal(err)
	}
	if claims.Version != "api-v2" {
		t.Fatalf("version = %q, want api-v2", claims.Version)
	}
}

// A claim whose placeholder names no metadata entry is issued neither without its value nor as
// its template: the client gets no token, with the reason that says why.
func TestAClientWhoseClaimTemplateDoesNotRenderGetsNoToken(t *testing.T) {
	c := testClient(goodID, goodSecret)
	c.Spec.TrustedMetadata = map[string]apiextensionsv1.JSON{"api_version": {Raw: []byte(`"v2"`)}}
	c.Spec.TokenClaims = m2mv1alpha1.TokenClaims{"version": {Raw: []byte(`"${apiVersion}"`)}, "team": {Raw: []byte(`"billing"`)}}
	f := serve(t, signingkeys.ES256, mapClients{goodID: c})
	resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)})
	if resp.StatusCode != http.StatusBadRequest || body["error"] != ErrUnauthorizedClient ||
		!strings.Contains(body["error_description"].(string), "trustedMetadata") {
		t.Fatalf("a claim naming a missing entry: %d %v, want 400 unauthorized_client that names trustedMetadata", resp.StatusCode, body)
	}
}

// A short template that repeats a long metadata value is bounded as written claims are.
func TestATemplateThatRendersOverTheBoundMarksTheClientTooLarge(t *testing.T) {
	c := testClient(goodID, goodSecret)
	c.Spec.TrustedMetadata = map[string]apiextensionsv1.JSON{"x": {Raw: []byte(`"` + strings.Repeat("x", 2000) + `"`)}}
	c.Spec.TokenClaims = m2mv1alpha1.TokenClaims{"v": {Raw: []byte(`"${x}${x}${x}"`)}}
	if cached := NewCachedClient(c); cached.Spec.TokenClaims != nil || cached.claims != claimsOverBound {
		t.Fatal("the cache kept claims that render over the bound, or did not mark the client")
	}
}
