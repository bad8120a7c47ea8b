package tokenserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	clocktesting "k8s.io/utils/clock/testing"

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
		"10.0.0.7:8443":                       publicIssuer, // any other name gets the issuer's URLs
	} {
		req := httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var md Metadata
		if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("Host %s: %d %s", host, rec.Code, rec.Body)
		}
		if md.Issuer != publicIssuer || md.TokenEndpoint != base+"/oauth2/token" || md.JWKSURI != base+"/.well-known/jwks.json" || md.IntrospectionEndpoint != base+"/oauth2/introspect" {
			t.Fatalf("Host %s: metadata %+v, want issuer %s and endpoints under %s", host, md, publicIssuer, base)
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

func TestABadInClusterOrPreviousIssuerURLIsRefused(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	for name, cfg := range map[string]Config{
		"an in-cluster URL with a query":    {InClusterURL: "https://m2m.svc?x=1"},
		"a previous issuer with no scheme":  {PreviousIssuerURL: "auth.example.com"},
		"an in-cluster URL of another kind": {InClusterURL: "ftp://m2m.svc"},
	} {
		cfg.IssuerURL, cfg.Clients, cfg.Keys = publicIssuer, mapClients{}, keys
		if _, err := New(cfg); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}
