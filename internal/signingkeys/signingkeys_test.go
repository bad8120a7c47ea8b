package signingkeys

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

var now = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

// A token signed with each algorithm verifies with the public key rebuilt from its JWK alone.
func TestATokenSignedWithEachAlgorithmVerifiesAgainstItsPublishedJWK(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			k, err := Generate(alg, StateActive, now)
			if err != nil {
				t.Fatal(err)
			}
			tok := jwt.NewWithClaims(k.Method(), jwt.MapClaims{"sub": "x"})
			tok.Header["kid"] = k.KID
			signed, err := tok.SignedString(k.SigningKey())
			if err != nil {
				t.Fatal(err)
			}
			raw, err := json.Marshal((&Set{Keys: []*Key{k}}).Published(now, time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var jwks jwk.Set
			if err := json.Unmarshal(raw, &jwks); err != nil || len(jwks.Keys) != 1 {
				t.Fatalf("JWKS %s: %v", raw, err)
			}
			if strings.Contains(string(raw), `"d"`) || strings.Contains(string(raw), "privateKey") {
				t.Fatal("the JWKS contains private key material")
			}
			pub, err := jwks.Keys[0].PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{string(alg)})); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

func TestAKeySetSurvivesTheSecretRoundTrip(t *testing.T) {
	var keys []*Key
	for _, alg := range Algorithms {
		k, err := Generate(alg, StateNext, now)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	keys[0].State = StateActive
	data, err := (&Set{Keys: keys}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Active() == nil || got.Active().KID != keys[0].KID || got.Find(keys[2].KID).Signer() == nil {
		t.Fatal("the parsed set lost its active key or its private keys")
	}
}

func TestParseRefusesDamagedKeySets(t *testing.T) {
	a, _ := Generate(ES256, StateActive, now)
	b, _ := Generate(ES256, StateActive, now)
	enc := func(s *Set) string { d, _ := s.Encode(); return string(d) }
	wrongAlg := *a
	wrongAlg.Algorithm = RS256
	dup := *a
	dup.State = StateNext
	badState := *a
	badState.State = "sleeping"
	garbled := *a
	garbled.PrivateKey = []byte("nope")
	for sentence, data := range map[string]string{
		"an empty Secret":                   "",
		"text that is not JSON":             "{",
		"two active keys":                   enc(&Set{Keys: []*Key{a, b}}),
		"a key whose type differs from alg": enc(&Set{Keys: []*Key{&wrongAlg}}),
		"a kid used twice":                  enc(&Set{Keys: []*Key{a, &dup}}),
		"an unknown state":                  enc(&Set{Keys: []*Key{&badState}}),
		"a private key that does not parse": enc(&Set{Keys: []*Key{&garbled}}),
	} {
		t.Run(sentence, func(t *testing.T) {
			if _, err := Parse([]byte(data)); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), string(a.PrivateKey)) {
				t.Fatal("the error contains key material")
			}
		})
	}
}

func TestPublishedKeepsRetiredKeysOnlyWhileTheirTokensMayBeValid(t *testing.T) {
	next, _ := Generate(ES256, StateNext, now)
	active, _ := Generate(ES256, StateActive, now)
	recent, _ := Generate(ES256, StateRetired, now)
	old, _ := Generate(ES256, StateRetired, now)
	r1, r2 := now.Add(-30*time.Minute), now.Add(-2*time.Hour)
	recent.RetiredAt, old.RetiredAt = &r1, &r2
	jwks := (&Set{Keys: []*Key{next, active, recent, old}}).Published(now, time.Hour)
	var kids []string
	for _, k := range jwks.Keys {
		kids = append(kids, k.KeyID)
	}
	want := []string{next.KID, active.KID, recent.KID}
	if strings.Join(kids, ",") != strings.Join(want, ",") {
		t.Fatalf("published %v, want next, active and the recently retired key", kids)
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, ok := range []string{"ES256", "RS256", "EdDSA"} {
		if _, err := ParseAlgorithm(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "HS256", "none", "es256"} {
		if _, err := ParseAlgorithm(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
