package tokenserver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
)

// The issuers of the precedence tests: the cluster's own ServiceAccount issuer, a CI system and
// another cluster, both federated where a test says so.
const (
	ownIssuer    = "https://kubernetes.default.svc"
	ciIssuer     = "https://ci.example.com"
	otherCluster = "https://oidc.other-cluster.example"
)

// Each precedence test below names one rule of authenticatorOrder, and checks it by the path that
// answered: a reason that only that path gives, or a client that only that path accepts.

func TestOnlyARequestWithoutAnAssertionTakesTheSecretPath(t *testing.T) {
	c := workloadClient("team-b", "worker")
	s := authServer(t, mapClients{goodID: c}, fakeServiceAccounts{issuer: ownIssuer}, nil)
	if got, bad := authenticateForm(t, s, "client_id", goodID, "client_secret", goodSecret); bad != nil || !sameClient(got, c) {
		t.Fatalf("a request with a secret and no assertion: %v", bad)
	}
	// The secret path would refuse this one as no_credentials; the ServiceAccount path accepts it.
	token := workloadToken(t, newKey(t), ownIssuer, "system:serviceaccount:team-b:worker")
	if got, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token); bad != nil || !sameClient(got, c) {
		t.Fatalf("a request with an assertion and no secret: %v", bad)
	}
}

func TestTheClustersOwnIssuerTakesTheServiceAccountPathEvenWhenListedAsFederated(t *testing.T) {
	s, token := ownIssuerListedAsFederated(t)
	_, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token)
	wantReason(t, bad, "service_account_not_allowed")
}

// ownIssuerListedAsFederated is a server that also lists the cluster's own issuer as federated,
// with its keys loaded, whose client goodID in team-a allows team-b's worker as a federated
// identity and its own namespace's worker as a ServiceAccount; and a token of team-b's worker that
// the federated path accepts, so that only the choice of path can refuse it.
func ownIssuerListedAsFederated(t *testing.T) (*Server, string) {
	key := newKey(t)
	c := workloadClient("team-a", "worker", m2mv1alpha1.FederatedIdentity{Issuer: ownIssuer, Subject: "system:serviceaccount:team-b:worker"})
	fed := loadedFederation(t, key, ownIssuer)
	token := workloadToken(t, key, ownIssuer, "system:serviceaccount:team-b:worker")
	if sub, err := fed.Verify(context.Background(), ownIssuer, token, []string{testIssuer}); err != nil || sub == "" {
		t.Fatalf("the federated path itself would refuse the token (%v), so the test could not fail", err)
	}
	return authServer(t, mapClients{goodID: c}, fakeServiceAccounts{issuer: ownIssuer}, fed), token
}

func TestTheClustersOwnIssuerTakesTheServiceAccountPathEvenWhenItIsTheClientID(t *testing.T) {
	key := newKey(t)
	c := clientWithKey(ownIssuer, key)
	c.Namespace = "team-a"
	c.Spec.Authentication.ServiceAccounts = []string{"worker"}
	seal(c)
	// Signed by the client's own key with iss and sub the client ID: private_key_jwt would accept
	// it, as it does on a server that does not know the cluster's issuer.
	form := func() []string {
		return []string{"client_id", ownIssuer, "client_assertion_type", JWTBearerAssertion, "client_assertion", ownAssertion(t, key, ownIssuer)}
	}
	if _, bad := authenticateForm(t, authServer(t, mapClients{ownIssuer: c}, nil, nil), form()...); bad != nil {
		t.Fatalf("private_key_jwt refused the assertion (%v), so the test could not fail", bad)
	}
	s := authServer(t, mapClients{ownIssuer: c}, fakeServiceAccounts{issuer: ownIssuer}, nil)
	_, bad := authenticateForm(t, s, form()...)
	wantReason(t, bad, "service_account_not_allowed")
}

func TestAnAssertionTheClientSignedItselfTakesThePrivateKeyJWTPathEvenWhenItsIssuerIsFederated(t *testing.T) {
	key := newKey(t)
	c := seal(clientWithKey(ciIssuer, key))
	// The federated issuer's keys are loaded, and are not the client's: the federated path refuses.
	s := authServer(t, mapClients{ciIssuer: c}, fakeServiceAccounts{issuer: ownIssuer}, loadedFederation(t, newKey(t), ciIssuer))
	got, bad := authenticateForm(t, s, "client_id", ciIssuer, "client_assertion_type", JWTBearerAssertion, "client_assertion", ownAssertion(t, key, ciIssuer))
	if bad != nil || !sameClient(got, c) {
		t.Fatalf("the client's own assertion was refused: %v", bad)
	}
}

// Without client_id, iss names the client: the assertion takes the private_key_jwt path, even a
// federated issuer's, which then names no client.
func TestAnAssertionWithoutClientIDTakesThePrivateKeyJWTPathWithIssAsTheClientID(t *testing.T) {
	key := newKey(t)
	c := seal(clientWithKey(goodID, key))
	s := authServer(t, mapClients{goodID: c}, fakeServiceAccounts{issuer: ownIssuer}, loadedFederation(t, key, ciIssuer))
	got, bad := authenticateForm(t, s, "client_assertion_type", JWTBearerAssertion, "client_assertion", ownAssertion(t, key, goodID))
	if bad != nil || !sameClient(got, c) {
		t.Fatalf("an assertion naming its client in iss alone was refused: %v", bad)
	}
	_, bad = authenticateForm(t, s, "client_assertion_type", JWTBearerAssertion, "client_assertion", workloadToken(t, key, ciIssuer, "repo:payments"))
	wantReason(t, bad, "unknown_client")
}

// Several clients may allow one workload, so a workload assertion needs client_id. Without it, iss
// names the client (the private_key_jwt rule above) for every assertion but the cluster's own
// ServiceAccount tokens and tokens without iss, which are refused before anything verifies them.
func TestAnAssertionOfTheClustersOwnIssuerOrWithoutIssNeedsClientIDBeforeItIsVerified(t *testing.T) {
	key := newKey(t)
	clients := mapClients{goodID: workloadClient("team-b", "worker")}
	for sentence, tc := range map[string]struct {
		serviceAccounts bool
		token           string
	}{
		"a token of the cluster's own issuer":              {true, workloadToken(t, key, ownIssuer, "system:serviceaccount:team-b:worker")},
		"a token without iss":                              {true, workloadToken(t, key, "", "system:serviceaccount:team-b:worker")},
		"a token without iss on a server with no verifier": {false, workloadToken(t, key, "", "x")},
	} {
		t.Run(sentence, func(t *testing.T) {
			sa := &countingServiceAccounts{fakeServiceAccounts: fakeServiceAccounts{issuer: ownIssuer}}
			var verifier ServiceAccountTokens
			if tc.serviceAccounts {
				verifier = sa
			}
			s := authServer(t, clients, verifier, loadedFederation(t, key, ownIssuer))
			_, bad := authenticateForm(t, s, "client_assertion_type", JWTBearerAssertion, "client_assertion", tc.token)
			wantReason(t, bad, "client_id_missing")
			if bad.Code != ErrInvalidRequest || sa.verified != 0 {
				t.Fatalf("error %s after %d ServiceAccount verifications, want invalid_request after none", bad.Code, sa.verified)
			}
		})
	}
}

func TestAnAssertionOfAFederatedIssuerTakesTheFederatedPathBeforeTheServiceAccountPath(t *testing.T) {
	key := newKey(t)
	c := workloadClient("team-a", "", m2mv1alpha1.FederatedIdentity{Issuer: ciIssuer, Subject: "repo:payments"})
	s := authServer(t, mapClients{goodID: c}, fakeServiceAccounts{issuer: ownIssuer}, loadedFederation(t, key, ciIssuer))
	// The ServiceAccount path would say team-b's worker, which this client does not allow.
	got, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", workloadToken(t, key, ciIssuer, "repo:payments"))
	if bad != nil || !sameClient(got, c) {
		t.Fatalf("a federated identity the client allows was refused: %v", bad)
	}
}

// Until the cluster's own ServiceAccount issuer is discovered, a federated token whose subject is
// a ServiceAccount might be the cluster's own, which must take the namespace-checked path.
func TestAFederatedServiceAccountSubjectIsRefusedWhileTheClustersIssuerIsUnknown(t *testing.T) {
	key := newKey(t)
	c := workloadClient("team-a", "", m2mv1alpha1.FederatedIdentity{Issuer: otherCluster, Subject: "system:serviceaccount:team-a:worker"})
	token := workloadToken(t, key, otherCluster, "system:serviceaccount:team-a:worker")
	for clusterIssuer, want := range map[string]string{"": "service_account_issuer_unknown", ownIssuer: ""} {
		s := authServer(t, mapClients{goodID: c}, fakeServiceAccounts{issuer: clusterIssuer}, loadedFederation(t, key, otherCluster))
		_, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token)
		wantReason(t, bad, want)
	}
}

func TestAnyOtherAssertionTakesTheServiceAccountPath(t *testing.T) {
	c := workloadClient("team-b", "worker")
	sa := &countingServiceAccounts{fakeServiceAccounts: fakeServiceAccounts{issuer: ownIssuer}}
	s := authServer(t, mapClients{goodID: c}, sa, loadedFederation(t, newKey(t), ciIssuer))
	token := workloadToken(t, newKey(t), "https://unknown.example", "system:serviceaccount:team-b:worker")
	got, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token)
	if bad != nil || !sameClient(got, c) || sa.verified != 1 {
		t.Fatalf("got %v after %d ServiceAccount verifications, want the client after one", bad, sa.verified)
	}
}

func TestWithoutAServiceAccountVerifierAnyOtherAssertionIsNotSupported(t *testing.T) {
	s := authServer(t, mapClients{goodID: testClient(goodID, goodSecret)}, nil, loadedFederation(t, newKey(t), ciIssuer))
	token := workloadToken(t, newKey(t), "https://unknown.example", "system:serviceaccount:ns:worker")
	_, bad := authenticateForm(t, s, "client_id", goodID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token)
	wantReason(t, bad, "assertion_not_supported")
}

// fakeAuth is an authenticator that applies to every request, refuses with reason (or accepts
// when it is empty), advertises what it is given and counts its decoy work.
type fakeAuth struct {
	methods, algs []string
	reason        *reason
	decoys        int
}

func (f *fakeAuth) advertised() ([]string, []string) { return f.methods, f.algs }
func (f *fakeAuth) applies(*tokenRequest) bool       { return true }
func (f *fakeAuth) decoy(*tokenRequest)              { f.decoys++ }
func (f *fakeAuth) authenticate(_ context.Context, _ *tokenRequest, c *CachedClient, _ *keyState) (*CachedClient, *oauthError) {
	if f.reason != nil {
		return nil, invalidClient(f.reason)
	}
	return c, nil
}

func TestTheFirstAuthenticatorThatAppliesDecidesEvenWhenItRefuses(t *testing.T) {
	s := authServer(t, mapClients{goodID: testClient(goodID, goodSecret)}, nil, nil)
	s.authenticators = []authenticator{&fakeAuth{reason: &reason{name: "first", code: ErrInvalidClient}}, &fakeAuth{}}
	_, bad := authenticateForm(t, s, "client_id", goodID, "client_secret", goodSecret)
	wantReason(t, bad, "first")
}

func TestTheDecoyWorkIsDoneForAnUnknownClientOnly(t *testing.T) {
	s := authServer(t, mapClients{goodID: testClient(goodID, goodSecret)}, nil, nil)
	fake := &fakeAuth{}
	s.authenticators = []authenticator{fake}
	authenticateForm(t, s, "client_id", goodID, "client_secret", goodSecret)
	if fake.decoys != 0 {
		t.Fatalf("a known client cost %d decoys", fake.decoys)
	}
	authenticateForm(t, s, "client_id", "m2m-nobody", "client_secret", goodSecret)
	if fake.decoys != 1 {
		t.Fatalf("an unknown client cost %d decoys, want 1", fake.decoys)
	}
}

// The metadata names what the authenticators advertise, in their order, each once: today the
// secret's two methods and private_key_jwt with its algorithms, and whatever a new one adds.
func TestTheMetadataAdvertisesTheAuthMethodsOfTheAuthenticatorsInTheirOrder(t *testing.T) {
	s := authServer(t, mapClients{}, fakeServiceAccounts{issuer: ownIssuer}, loadedFederation(t, newKey(t), ciIssuer))
	check := func(methods, algs []string) {
		t.Helper()
		w := httptest.NewRecorder()
		s.discovery(w, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil))
		var md Metadata
		if err := json.Unmarshal(w.Body.Bytes(), &md); err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string][]string{
			"token_endpoint_auth_methods_supported": md.TokenEndpointAuthMethodsSupported, "introspection_endpoint_auth_methods_supported": md.IntrospectionEndpointAuthMethods,
			"token_endpoint_auth_signing_alg_values_supported": md.TokenEndpointAuthSigningAlgs, "introspection_endpoint_auth_signing_alg_values_supported": md.IntrospectionEndpointAuthSigningAlgs,
		} {
			want := methods
			if strings.Contains(name, "alg") {
				want = algs
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
	}
	check([]string{"client_secret_basic", "client_secret_post", "private_key_jwt"}, []string{"ES256", "RS256", "EdDSA"})
	s.authenticators = append(s.authenticators, &fakeAuth{methods: []string{"tls_client_auth", "private_key_jwt"}, algs: []string{"PS256"}})
	check([]string{"client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"}, []string{"ES256", "RS256", "EdDSA", "PS256"})
}

// authServer is a Server of testIssuer for clients, with the ServiceAccount verifier and the
// federation given (either may be nil).
func authServer(t *testing.T, clients ClientSource, sa ServiceAccountTokens, fed *Federation) *Server {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: clients, Keys: keys, Clock: clocktesting.NewFakeClock(t0), ServiceAccounts: sa, Federation: fed})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// authenticateForm parses a form body of kv, as the token endpoint does, and authenticates it.
func authenticateForm(t *testing.T, s *Server, kv ...string) (*CachedClient, *oauthError) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(formBody(append([]string{"grant_type", "client_credentials"}, kv...)...)))
	r.Header.Set("Content-Type", form)
	req, bad := parseRequest(httptest.NewRecorder(), r)
	if bad != nil {
		t.Fatalf("the request does not parse: %v", bad)
	}
	client, _, bad := s.authenticate(context.Background(), req)
	return client, bad
}

// wantReason fails unless bad has reason, or is nil when reason is empty.
func wantReason(t *testing.T, bad *oauthError, reason string) {
	t.Helper()
	got := ""
	if bad != nil {
		got = bad.reason.name
	}
	if got != reason {
		t.Fatalf("reason %q, want %q", got, reason)
	}
}

func newKey(t testing.TB) *signingkeys.Key {
	t.Helper()
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// workloadClient is goodID in namespace ns, allowing serviceAccount (when not empty) and the
// federated identities.
func workloadClient(ns, serviceAccount string, federated ...m2mv1alpha1.FederatedIdentity) *m2mv1alpha1.M2MClient {
	c := testClient(goodID, goodSecret)
	c.Namespace = ns
	if serviceAccount != "" {
		c.Spec.Authentication.ServiceAccounts = []string{serviceAccount}
	}
	c.Spec.Authentication.Federated = federated
	return seal(c)
}

// clientWithKey is a client with ID id whose spec names key's public half, and no secret.
func clientWithKey(id string, key *signingkeys.Key) *m2mv1alpha1.M2MClient {
	pub := key.PublicJWK()
	off := false
	c := testClient(id, goodSecret)
	c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: &off, PublicKeys: []m2mv1alpha1.ClientPublicKey{{
		KeyID: pub.KeyID, KeyType: pub.KeyType, Algorithm: pub.Algorithm, Curve: pub.Curve, X: pub.X, Y: pub.Y}}}
	c.Status.AcceptedSecrets = nil
	return c
}

// loadedFederation trusts issuers, each with key's public half as its keys, as if read from it.
func loadedFederation(t *testing.T, key *signingkeys.Key, issuers ...string) *Federation {
	t.Helper()
	var list []FederatedIssuer
	for _, iss := range issuers {
		list = append(list, FederatedIssuer{Issuer: iss})
	}
	fed := NewFederation(list, clocktesting.NewFakeClock(t0))
	for _, iss := range issuers {
		fk := fed.issuers[iss]
		fk.issuer, fk.lastAttempt = iss, t0
		fk.keys[key.KID] = assertionKey{key: key.Signer().Public(), alg: "ES256"}
	}
	return fed
}

// signed is claims signed by key, named by its kid.
func signed(t testing.TB, key *signingkeys.Key, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(key.Method(), claims)
	tok.Header["kid"] = key.KID
	out, err := tok.SignedString(key.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// workloadToken is a token of iss for sub, for this server: what the cluster or a federated
// issuer issues to a workload.
func workloadToken(t *testing.T, key *signingkeys.Key, iss, sub string) string {
	return signed(t, key, jwt.MapClaims{"iss": iss, "sub": sub, "aud": testIssuer, "iat": t0.Unix(), "exp": t0.Add(10 * time.Minute).Unix()})
}

// ownAssertion is an RFC 7523 §3 assertion of clientID signed by the client's key.
func ownAssertion(t *testing.T, key *signingkeys.Key, clientID string) string {
	return signed(t, key, jwt.MapClaims{"iss": clientID, "sub": clientID, "aud": testIssuer, "iat": t0.Unix(), "exp": t0.Add(time.Minute).Unix(), "jti": "jti-" + key.KID})
}

// countingServiceAccounts is fakeServiceAccounts that counts the tokens it verifies.
type countingServiceAccounts struct {
	fakeServiceAccounts
	verified int
}

func (c *countingServiceAccounts) Verify(ctx context.Context, token string, audiences []string) (string, string, error) {
	c.verified++
	return c.fakeServiceAccounts.Verify(ctx, token, audiences)
}

func TestAVerifiedCertificateWithoutOtherCredentialsTakesTheCertificatePathBeforeTheSecretPath(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	c := NewCachedClient(podClient(podID))
	s, err := New(Config{IssuerURL: testIssuer, Clients: cachedClients{podID: c}, Keys: keys, ClientCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := podcert.NewCA(t).Issue(t, podNS, podSA)
	// The secret path would refuse it as no_credentials.
	if got, _, bad := s.authenticate(t.Context(), &tokenRequest{clientID: podID, peerCertificate: leaf.Cert}); bad != nil || got != c {
		t.Fatalf("a certificate and client_id alone: %v", bad)
	}
	// With a secret too, the secret path decides, and the token is not bound.
	req := &tokenRequest{clientID: podID, clientSecret: goodSecret, secretGiven: true, peerCertificate: leaf.Cert}
	if got, _, bad := s.authenticate(t.Context(), req); bad != nil || got != c || req.certificateThumbprint != "" {
		t.Fatalf("a certificate and a secret: %v, thumbprint %q", bad, req.certificateThumbprint)
	}
}
