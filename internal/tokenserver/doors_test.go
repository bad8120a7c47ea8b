package tokenserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/golang-jwt/jwt/v5"
	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

const (
	publicIssuer = "https://auth.example.com"
	inClusterURL = "https://m2m-token-server.m2m-system.svc"
)

// Through the public door, the metadata names the public endpoints; through the Service, the
// in-cluster ones, so that pods never hairpin through the load balancer; the issuer is the
// public one either way, so tokens verify the same wherever they were fetched.
func TestTheMetadataNamesTheEndpointsOfTheDoorItWasFetchedThrough(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: publicIssuer, InClusterURL: inClusterURL, Clients: mapClients{}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	for host, base := range map[string]string{
		"auth.example.com":                    publicIssuer,
		"m2m-token-server.m2m-system.svc":     inClusterURL,
		"m2m-token-server.m2m-system.svc:443": inClusterURL,
		"auth.example.com:443":                publicIssuer,
		"m2m-token-server":                    inClusterURL, // any other name of the Service
		"10.0.0.7:8443":                       inClusterURL,
	} {
		req := httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var md Metadata
		if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("Host %s: %d %s", host, rec.Code, rec.Body)
		}
		if md.Issuer != publicIssuer || md.TokenEndpoint != base+"/oauth2/token" || md.JWKSURI != base+"/.well-known/jwks.json" || md.IntrospectionEndpoint != base+"/oauth2/introspect" ||
			md.RevocationListURI != base+RevocationsPath {
			t.Fatalf("Host %s: metadata %+v, want issuer %s and endpoints under %s", host, md, publicIssuer, base)
		}
		// The list is served through either door, with the issuer the verifier expects.
		req = httptest.NewRequest(http.MethodGet, RevocationsPath, nil)
		req.Host = host
		rec = httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/"+RevocationListType {
			t.Fatalf("Host %s: the revocation list answered %d %s", host, rec.Code, rec.Body)
		}
	}
}

// During a move to a new issuer, assertions still naming the previous one stay accepted (pods
// sign with the issuer their mounted Secret names until it changes); without the move, or for
// any other audience, they are refused.
func TestAnAssertionForThePreviousIssuerIsAcceptedOnlyDuringTheMove(t *testing.T) {
	signer, c := generatedKeyClient(t, m2mv1alpha1.KeyAlgorithmES256)
	for name, tc := range map[string]struct {
		previous, aud string
		want          int
	}{
		"the new issuer is accepted during the move":       {previous: testIssuer, aud: publicIssuer, want: 200},
		"the previous issuer is accepted during the move":  {previous: testIssuer, aud: testIssuer, want: 200},
		"the previous issuer is refused after the move":    {aud: testIssuer, want: 401},
		"another audience is refused during the move":      {previous: testIssuer, aud: "https://elsewhere.example.com", want: 401},
		"the token URL is not the issuer, during the move": {previous: testIssuer, aud: testIssuer + "/oauth2/token", want: 401},
	} {
		t.Run(name, func(t *testing.T) {
			_, keys := staticKeys(t, signingkeys.ES256)
			s, err := New(Config{IssuerURL: publicIssuer, InClusterURL: inClusterURL, PreviousIssuerURL: tc.previous,
				Clients: mapClients{goodID: c}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
			if err != nil {
				t.Fatal(err)
			}
			f := &fixture{srv: newTestServer(t, s)}
			resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials",
				"client_assertion_type", JWTBearerAssertion, "client_assertion", selfSignedFor(t, signer, "jti-1", tc.aud))})
			if resp.StatusCode != tc.want {
				t.Fatalf("aud %s with previous issuer %q: %d %v, want %d", tc.aud, tc.previous, resp.StatusCode, body, tc.want)
			}
		})
	}
}

// A federated platform keeps sending the audience it was configured with (the previous issuer)
// until its administrator changes it: accepted during the move, refused after it.
func TestAFederatedAssertionForThePreviousIssuerIsAcceptedOnlyDuringTheMove(t *testing.T) {
	key := newKey(t)
	c := workloadClient("team-a", "", m2mv1alpha1.FederatedIdentity{Issuer: ciIssuer, Subject: "repo:payments"})
	for name, tc := range map[string]struct {
		previous, aud, reason string
	}{
		"the new issuer is accepted during the move":      {previous: testIssuer, aud: publicIssuer},
		"the previous issuer is accepted during the move": {previous: testIssuer, aud: testIssuer},
		"the previous issuer is refused after the move":   {aud: testIssuer, reason: "assertion_invalid"},
		"another audience is refused during the move":     {previous: testIssuer, aud: inClusterURL, reason: "assertion_invalid"},
	} {
		t.Run(name, func(t *testing.T) {
			_, keys := staticKeys(t, signingkeys.ES256)
			s, err := New(Config{IssuerURL: publicIssuer, InClusterURL: inClusterURL, PreviousIssuerURL: tc.previous,
				Clients: mapClients{goodID: c}, Keys: keys, Clock: clocktesting.NewFakeClock(t0),
				ServiceAccounts: fakeServiceAccounts{issuer: ownIssuer}, Federation: loadedFederation(t, key, ciIssuer)})
			if err != nil {
				t.Fatal(err)
			}
			token := signed(t, key, jwt.MapClaims{"iss": ciIssuer, "sub": "repo:payments", "aud": tc.aud, "iat": t0.Unix(), "exp": t0.Add(10 * time.Minute).Unix()})
			_, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token)
			wantReason(t, bad, tc.reason)
		})
	}
}

// A bad --in-cluster-url or --previous-issuer-url stops the server at start, naming the flag's
// URL. So does a previous issuer that is the issuer itself, spelled alike or not: it can only be
// a mistake (the new issuer where the old one was meant), and a server that started with it
// would refuse every assertion that still names the old issuer; refused at start, the new
// replica never serves, and a rolling update keeps the old ones.
func TestABadInClusterOrPreviousIssuerURLIsRefused(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	for name, tc := range map[string]struct {
		cfg  Config
		says string
	}{
		"an in-cluster URL with a query":                 {Config{InClusterURL: "https://m2m.svc?x=1"}, "the in-cluster URL"},
		"an in-cluster URL of another kind":              {Config{InClusterURL: "ftp://m2m.svc"}, "the in-cluster URL"},
		"a previous issuer with no scheme":               {Config{PreviousIssuerURL: "auth.example.com"}, "the previous issuer URL"},
		"a previous issuer with a fragment":              {Config{PreviousIssuerURL: "https://old.example.com#x"}, "the previous issuer URL"},
		"the issuer as its own previous issuer":          {Config{PreviousIssuerURL: publicIssuer}, "is the issuer itself"},
		"the issuer with a slash as its previous issuer": {Config{PreviousIssuerURL: publicIssuer + "/"}, "is the issuer itself"},
	} {
		cfg := tc.cfg
		cfg.IssuerURL, cfg.Clients, cfg.Keys = publicIssuer, mapClients{}, keys
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("%s: %v, want an error that says %q", name, err, tc.says)
		}
	}
}
