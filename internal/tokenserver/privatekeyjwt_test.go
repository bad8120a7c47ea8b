package tokenserver

import (
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
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
	pub := key.PublicJWK()
	off := false
	c := testClient(goodID, goodSecret)
	c.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: &off, PublicKeys: []m2mv1alpha1.ClientPublicKey{{
		KeyID: pub.KeyID, KeyType: pub.KeyType, Algorithm: pub.Algorithm, Curve: pub.Curve, X: pub.X, Y: pub.Y}}}
	c.Status.AcceptedSecrets = nil
	seal(c)
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
		tok := jwt.NewWithClaims(k.Method(), claims)
		tok.Header["kid"] = k.KID
		signed, err := tok.SignedString(k.SigningKey())
		if err != nil {
			t.Fatal(err)
		}
		return signed
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

// One client's key cannot fill the replay cache for everyone: a jti over 256 bytes is refused,
// each client holds at most its share, and expired entries are swept.
func TestTheReplayCacheIsBoundedPerClientAndSweepsExpiredEntries(t *testing.T) {
	var c replayCache
	exp := t0.Add(time.Minute)
	if c.first("a", string(make([]byte, maxJTILength+1)), exp, t0) {
		t.Fatal("a jti over the length limit was recorded")
	}
	for i := range maxReplayPerClient {
		if !c.first("a", "jti-"+strconv.Itoa(i), exp, t0) {
			t.Fatalf("jti %d of client a was refused before its share was full", i)
		}
	}
	if c.first("a", "one-more", exp, t0) {
		t.Fatal("client a went over its share")
	}
	if !c.first("b", "jti-0", exp, t0) {
		t.Fatal("client a's full share locked client b out")
	}
	if c.first("b", "jti-0", exp, t0) {
		t.Fatal("a replayed jti was accepted")
	}
	later := exp.Add(replaySweepEvery)
	if !c.first("a", "after-expiry", later.Add(time.Minute), later) || len(c.seen) != 1 {
		t.Fatalf("expired entries were not swept: %d left", len(c.seen))
	}
}
