package tokenserver

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// RFC 7523 §3 and draft-ietf-oauth-rfc7523bis: a client with a public key of its own gets tokens
// with assertions it signs; every departure from the profile is invalid_client, and a jti is
// accepted once (per replica).
func TestPrivateKeyJWTFollowsRFC7523bis(t *testing.T) {
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	c := seal(clientWithKey(goodID, key))
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: c}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: newTestServer(t, s)}
	n := 0
	assertion := func(k *signingkeys.Key, change func(jwt.MapClaims)) string {
		n++
		claims := jwt.MapClaims{"iss": goodID, "sub": goodID, "aud": testIssuer, "iat": t0.Unix(), "exp": t0.Add(2 * time.Minute).Unix(), "jti": "jti-" + string(rune('a'+n))}
		if change != nil {
			change(claims)
		}
		return signed(t, k, claims)
	}
	post := func(clientID, a string) int {
		params := []string{"grant_type", "client_credentials", "client_assertion_type", JWTBearerAssertion, "client_assertion", a}
		if clientID != "" {
			params = append(params, "client_id", clientID)
		}
		resp, _ := f.do(t, call{contentType: form, body: formBody(params...)})
		return resp.StatusCode
	}

	valid := assertion(key, nil)
	if code := post(goodID, valid); code != 200 {
		t.Fatalf("a valid assertion got %d", code)
	}
	if code := post(goodID, valid); code != 401 {
		t.Fatalf("the same assertion again (its jti replayed) got %d, want 401", code)
	}
	if code := post("", assertion(key, nil)); code != 200 {
		t.Fatalf("a valid assertion without client_id (iss names the client) got %d", code)
	}
	for sentence, a := range map[string]string{
		"aud is the token endpoint URL":      assertion(key, func(c jwt.MapClaims) { c["aud"] = issuer.TokenURL(testIssuer) }),
		"aud names the issuer and another":   assertion(key, func(c jwt.MapClaims) { c["aud"] = []string{testIssuer, "https://other.example"} }),
		"exp is 10 minutes after iat":        assertion(key, func(c jwt.MapClaims) { c["exp"] = t0.Add(10 * time.Minute).Unix() }),
		"no iat":                             assertion(key, func(c jwt.MapClaims) { delete(c, "iat") }),
		"no jti":                             assertion(key, func(c jwt.MapClaims) { delete(c, "jti") }),
		"sub is not the client":              assertion(key, func(c jwt.MapClaims) { c["sub"] = "someone-else" }),
		"expired":                            assertion(key, func(c jwt.MapClaims) { c["iat"], c["exp"] = t0.Add(-5*time.Minute).Unix(), t0.Add(-time.Minute).Unix() }),
		"signed with a key the client lacks": assertion(other, nil),
	} {
		if code := post(goodID, a); code != 401 {
			t.Errorf("%s: got %d, want 401", sentence, code)
		}
	}
	if code := post(disabledID, assertion(key, func(c jwt.MapClaims) { c["iss"], c["sub"] = disabledID, disabledID })); code != 401 {
		t.Errorf("an assertion for a client that does not exist got %d", code)
	}
}

// generatedKeyClient is a client whose key pair the manager generated: the private key (PEM)
// and the client, with the public key in its sealed status.
func generatedKeyClient(t *testing.T, alg m2mv1alpha1.KeyAlgorithm) (crypto.Signer, *m2mv1alpha1.M2MClient) {
	t.Helper()
	return generatedKeyClientNamed(t, alg, goodID)
}

// generatedKeyClientNamed is generatedKeyClient with the client ID id.
func generatedKeyClientNamed(t *testing.T, alg m2mv1alpha1.KeyAlgorithm, id string) (crypto.Signer, *m2mv1alpha1.M2MClient) {
	t.Helper()
	pemKey, err := credentials.KeyPair{Algorithm: alg}.Issue()
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := jwk.ParsePrivateKeyPEM([]byte(pemKey))
	if err != nil {
		t.Fatal(err)
	}
	entry, err := credentials.KeyPair{Algorithm: alg}.Entry(pemKey, t0)
	if err != nil {
		t.Fatal(err)
	}
	c := testClient(id, goodSecret)
	c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{KeyPair: &m2mv1alpha1.KeyPairPolicy{Algorithm: alg}}
	c.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{entry}
	return signer, seal(c)
}

// selfSigned is an RFC 7523 §3 assertion of goodID signed by signer, named by its thumbprint.
func selfSigned(t *testing.T, signer crypto.Signer, jti string) string {
	t.Helper()
	return selfSignedFor(t, signer, jti, testIssuer)
}

// selfSignedFor is selfSigned with the audience aud.
func selfSignedFor(t *testing.T, signer crypto.Signer, jti, aud string) string {
	t.Helper()
	return assertionOf(t, signer, goodID, jti, aud)
}

// assertionOf is an RFC 7523 §3 assertion of the client id for aud, signed by signer.
func assertionOf(t *testing.T, signer crypto.Signer, id, jti, aud string) string {
	t.Helper()
	pub, err := jwk.FromPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := pub.Thumbprint()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(pub.Algorithm), jwt.MapClaims{
		"iss": id, "sub": id, "aud": aud, "iat": t0.Unix(), "exp": t0.Add(time.Minute).Unix(), "jti": jti})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(signer)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func assertionStatus(t *testing.T, c *m2mv1alpha1.M2MClient, assertion string) int {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: c}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: newTestServer(t, s)}
	resp, _ := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials",
		"client_assertion_type", JWTBearerAssertion, "client_assertion", assertion)})
	return resp.StatusCode
}

func TestAGeneratedKeyPairInAuthenticatedStatusSignsAssertions(t *testing.T) {
	for _, alg := range []m2mv1alpha1.KeyAlgorithm{m2mv1alpha1.KeyAlgorithmES256, m2mv1alpha1.KeyAlgorithmEdDSA, m2mv1alpha1.KeyAlgorithmRS256} {
		signer, c := generatedKeyClient(t, alg)
		if code := assertionStatus(t, c, selfSigned(t, signer, "a")); code != 200 {
			t.Errorf("%s: an assertion signed with the generated key got %d", alg, code)
		}
	}
}

// Whoever can write status cannot add a key, extend one, or turn a key's entry into a secret's.
func TestAGeneratedKeyIsAcceptedOnlyAsTheManagerSealedIt(t *testing.T) {
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	past := metav1.NewTime(t0.Add(-time.Second))
	for sentence, tc := range map[string]struct {
		change func(c *m2mv1alpha1.M2MClient, attacker crypto.Signer)
		// byAttacker: the attacker signs with its own key, else with the client's.
		byAttacker bool
		want       int
	}{
		"the sealed key is accepted": {func(*m2mv1alpha1.M2MClient, crypto.Signer) {}, false, 200},
		"an attacker's key added without a MAC is refused": {func(c *m2mv1alpha1.M2MClient, a crypto.Signer) {
			e, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(pemOf(t, a), t0)
			e.ExpiresAt = &forever
			c.Status.AcceptedSecrets = append(c.Status.AcceptedSecrets, e)
		}, true, 401},
		"an attacker's key in place of the sealed one, with its MAC, is refused": {func(c *m2mv1alpha1.M2MClient, a crypto.Signer) {
			e, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(pemOf(t, a), t0)
			e.MAC = c.Status.AcceptedSecrets[0].MAC
			c.Status.AcceptedSecrets[0] = e
		}, true, 401},
		"a key past its grace period is refused": {func(c *m2mv1alpha1.M2MClient, _ crypto.Signer) {
			c.Status.AcceptedSecrets[0].ExpiresAt = &past
			seal(c)
		}, false, 401},
		"an unexpiring key of a client that turned key pairs off with nothing instead is refused": {func(c *m2mv1alpha1.M2MClient, _ crypto.Signer) {
			off := false
			c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: &off, ServiceAccounts: []string{"worker"}}
		}, false, 401},
		"an unexpiring key of a client switching to a secret is accepted until the manager handles the change": {func(c *m2mv1alpha1.M2MClient, _ crypto.Signer) {
			c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{}
			c.Generation, c.Status.ObservedGeneration = 2, 1
		}, false, 200},
		"an unexpiring key of a client whose switch to a secret the manager has handled is refused": {func(c *m2mv1alpha1.M2MClient, _ crypto.Signer) {
			c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{}
			c.Generation, c.Status.ObservedGeneration = 2, 2
		}, false, 401},
	} {
		t.Run(sentence, func(t *testing.T) {
			signer, c := generatedKeyClient(t, m2mv1alpha1.KeyAlgorithmES256)
			attacker, _ := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
			a, _, _ := jwk.ParsePrivateKeyPEM([]byte(attacker))
			tc.change(c, a)
			if tc.byAttacker {
				signer = a
			}
			if code := assertionStatus(t, c, selfSigned(t, signer, "a")); code != tc.want {
				t.Fatalf("got %d, want %d", code, tc.want)
			}
		})
	}
}

// A key entry's hash is the SHA-256 of the thumbprint input, which anyone can compute from the
// public key in status. Sent as a client secret, it must not match, MAC or not.
func TestTheThumbprintInputOfAGeneratedKeyIsNotAClientSecret(t *testing.T) {
	signer, c := generatedKeyClient(t, m2mv1alpha1.KeyAlgorithmES256)
	c.Spec.Authentication.ClientSecret = nil
	c.Spec.Authentication.KeyPair = nil // a client that takes secrets too
	seal(c)
	j := mustJWK(t, signer)
	input := `{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	if credentials.Hash(input) != c.Status.AcceptedSecrets[0].Hash {
		t.Fatal("the test's thumbprint input is not the entry's hash input")
	}
	f := serve(t, signingkeys.ES256, mapClients{goodID: c})
	if code, body := tokenFor(t, f, goodID, input); code != 401 {
		t.Fatalf("the public thumbprint input got %d %v as a client secret", code, body)
	}
	// Stripping the public key, which would make it a secret's entry, breaks its MAC.
	c.Status.AcceptedSecrets[0].PublicKey = nil
	f = serve(t, signingkeys.ES256, mapClients{goodID: c})
	if code, body := tokenFor(t, f, goodID, input); code != 401 {
		t.Fatalf("with the public key stripped, the thumbprint input got %d %v", code, body)
	}
}

func mustJWK(t *testing.T, s crypto.Signer) jwk.Key {
	j, err := jwk.FromPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func pemOf(t *testing.T, s crypto.Signer) string {
	b, err := jwk.MarshalPrivateKeyPEM(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A client switching from a secret to a key pair keeps its secret until the manager has issued
// the key and started the secret's grace period; one turning secrets off with nothing instead
// does not.
func TestASecretStaysAcceptedWhileItsClientSwitchesToAKeyPair(t *testing.T) {
	for sentence, tc := range map[string]struct {
		auth m2mv1alpha1.ClientAuthentication
		want int
	}{
		"switching to a key pair, not handled yet": {m2mv1alpha1.ClientAuthentication{KeyPair: &m2mv1alpha1.KeyPairPolicy{}}, 200},
		"switching to a key pair, handled":         {m2mv1alpha1.ClientAuthentication{KeyPair: &m2mv1alpha1.KeyPairPolicy{}}, 401},
		"turning secrets off":                      {m2mv1alpha1.ClientAuthentication{ClientSecret: new(bool), ServiceAccounts: []string{"worker"}}, 401},
	} {
		c := testClient(goodID, goodSecret)
		c.Spec.Authentication = tc.auth
		c.Generation, c.Status.ObservedGeneration = 2, 1
		if strings.HasSuffix(sentence, "handled") && !strings.HasSuffix(sentence, "not handled yet") {
			c.Status.ObservedGeneration = 2
		}
		f := serve(t, signingkeys.ES256, mapClients{goodID: c})
		if code, _ := tokenFor(t, f, goodID, goodSecret); code != tc.want {
			t.Errorf("%s: the unexpiring secret got %d, want %d", sentence, code, tc.want)
		}
	}
}

// FuzzClientAssertion feeds arbitrary client assertions, for a client with a key of its own, to
// the authenticators: never a panic, and never a client without the client's key, which the
// fuzzer does not have.
func FuzzClientAssertion(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJtMm0tZ29vZCJ9.AAAA", goodID)
	f.Add("a.b.c", "")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJtMm0tZ29vZCIsInN1YiI6Im0ybS1nb29kIn0.", goodID)
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		f.Fatal(err)
	}
	c := seal(clientWithKey(goodID, key))
	f.Fuzz(func(t *testing.T, assertion, clientID string) {
		s := authServer(t, mapClients{goodID: c}, nil, nil)
		kv := []string{"client_assertion_type", JWTBearerAssertion, "client_assertion", assertion}
		if clientID != "" {
			kv = append(kv, "client_id", clientID)
		}
		if got, bad := authenticateForm(t, s, kv...); bad == nil || got != nil {
			t.Fatalf("an assertion the fuzzer made authenticated %v", got)
		}
	})
}
