package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

const tokenURL = "https://issuer.example/token"

var (
	keysOnce             sync.Once
	ecKey, otherECKey    *ecdsa.PrivateKey
	edKey                ed25519.PrivateKey
	rsaKey, smallRSAKey  *rsa.PrivateKey
	now                  = time.Unix(1_800_000_000, 0)
	defaultVerifyOptions = VerifyOptions{Method: "POST", URLs: []string{tokenURL}, Now: now}
)

func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		ecKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		otherECKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, edKey, _ = ed25519.GenerateKey(rand.Reader)
		rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
		smallRSAKey, _ = rsa.GenerateKey(rand.Reader, 1024)
	})
}

// forge signs header and claims as given, with signer and the algorithm signAlg, so that a test
// can make any proof, including those NewProof never makes.
func forge(t testing.TB, signer crypto.Signer, signAlg string, header, claims map[string]any) string {
	t.Helper()
	h, err1 := json.Marshal(header)
	c, err2 := json.Marshal(claims)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	var sig []byte
	switch signAlg {
	case "none":
	case "HS256":
		mac := hmac.New(sha256.New, []byte("a shared secret"))
		mac.Write([]byte(input))
		sig = mac.Sum(nil)
	default:
		if sig, err1 = jwk.Sign(signer, signAlg, []byte(input)); err1 != nil {
			t.Fatal(err1)
		}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func jwkOf(t testing.TB, pub crypto.PublicKey) map[string]any {
	t.Helper()
	k, err := jwk.FromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(publicJWK(k), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func validParts(t testing.TB) (header, claims map[string]any) {
	return map[string]any{"typ": Type, "alg": "ES256", "jwk": jwkOf(t, ecKey.Public())},
		map[string]any{"htm": "POST", "htu": tokenURL, "iat": now.Unix(), "jti": "a-unique-id"}
}

func TestProofsOfEveryKeyTypeAreVerifiedAndNameTheirKey(t *testing.T) {
	keys(t)
	for name, key := range map[string]crypto.Signer{"P-256": ecKey, "Ed25519": edKey, "RSA 2048": rsaKey} {
		t.Run(name, func(t *testing.T) {
			proof, err := NewProof(key, "POST", tokenURL, ProofOptions{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Verify(proof, defaultVerifyOptions)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Thumbprint(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if got.JKT != want || got.JTI == "" || !got.IssuedAt.Equal(now) || !got.Until.Equal(now.Add(DefaultMaxAge)) {
				t.Fatalf("got %+v, want jkt %s, a jti, iat %v and until iat + %v", got, want, now, DefaultMaxAge)
			}
		})
	}
}

func TestNewProofLeavesTheQueryAndFragmentOutOfHtuAndMakesAFreshJTIEachTime(t *testing.T) {
	keys(t)
	var jtis []string
	for range 2 {
		proof, err := NewProof(ecKey, "GET", "https://api.example/things?page=2#top", ProofOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		var c proofClaims
		if err := decodePart(strings.Split(proof, ".")[1], &c); err != nil {
			t.Fatal(err)
		}
		if c.URL != "https://api.example/things" {
			t.Fatalf("htu %q", c.URL)
		}
		jtis = append(jtis, c.ID)
	}
	if jtis[0] == jtis[1] || len(jtis[0]) < 22 {
		t.Fatalf("jtis %q are not fresh 128-bit values", jtis)
	}
}

func TestNewProofPutsOnlyThePublicKeyInTheHeader(t *testing.T) {
	keys(t)
	for name, key := range map[string]crypto.Signer{"P-256": ecKey, "Ed25519": edKey, "RSA 2048": rsaKey} {
		proof, err := NewProof(key, "POST", tokenURL, ProofOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			Typ string                     `json:"typ"`
			Alg string                     `json:"alg"`
			JWK map[string]json.RawMessage `json:"jwk"`
		}
		if err := decodePart(strings.Split(proof, ".")[0], &h); err != nil {
			t.Fatal(err)
		}
		for m := range h.JWK {
			if !strings.Contains(" kty crv x y n e ", " "+m+" ") {
				t.Errorf("%s: the jwk has the member %q", name, m)
			}
		}
		if h.Typ != Type || h.Alg != map[string]string{"P-256": "ES256", "Ed25519": "EdDSA", "RSA 2048": "RS256"}[name] {
			t.Errorf("%s: typ %q alg %q", name, h.Typ, h.Alg)
		}
	}
}

func TestNewProofRefusesAnRSAKeyUnder2048Bits(t *testing.T) {
	keys(t)
	if _, err := NewProof(smallRSAKey, "POST", tokenURL, ProofOptions{}); err == nil {
		t.Fatal("a 1024-bit RSA key made a proof")
	}
}

func TestHtuIsComparedAfterNormalisation(t *testing.T) {
	keys(t)
	for sentence, tc := range map[string]struct {
		htu, accepted string
		ok            bool
	}{
		"scheme and host in another case are the same URL":    {"HTTPS://Issuer.Example/token", tokenURL, true},
		"the default port is the same URL as none":            {"https://issuer.example:443/token", tokenURL, true},
		"a query and a fragment are ignored":                  {"https://issuer.example/token?a=b#c", tokenURL, true},
		"an encoded unreserved character equals the plain":    {"https://issuer.example/%74oken", tokenURL, true},
		"an empty path is /":                                  {"https://issuer.example", "https://issuer.example/", true},
		"hex case of a percent-encoding does not matter":      {"https://issuer.example/a%2fb", "https://issuer.example/a%2Fb", true},
		"an encoded slash is not a slash":                     {"https://issuer.example/a%2Fb", "https://issuer.example/a/b", false},
		"a path in another case is another URL":               {"https://issuer.example/Token", tokenURL, false},
		"another port is another URL":                         {"https://issuer.example:8443/token", tokenURL, false},
		"http is not https":                                   {"http://issuer.example/token", tokenURL, false},
		"another host is another URL":                         {"https://evil.example/token", tokenURL, false},
		"a relative htu is refused":                           {"/token", tokenURL, false},
		"an htu with user information is refused":             {"https://u@issuer.example/token", tokenURL, false},
		"the second of several accepted URLs is matched too":  {"http://m2m.svc:8080/token", "http://m2m.svc:8080/token", true},
		"a path with a trailing slash is another URL":         {"https://issuer.example/token/", tokenURL, false},
		"a dot segment is not removed and the htu is refused": {"https://issuer.example/x/../token", tokenURL, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			h, c := validParts(t)
			c["htu"] = tc.htu
			o := defaultVerifyOptions
			o.URLs = []string{"https://other.example/token", tc.accepted}
			_, err := Verify(forge(t, ecKey, "ES256", h, c), o)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestVerifyRefusesEveryFlawedProof(t *testing.T) {
	keys(t)
	ecJWK := jwkOf(t, ecKey.Public())
	withPrivate := maps.Clone(ecJWK)
	withPrivate["d"] = "AAAA"
	edJWK := jwkOf(t, edKey.Public())
	// change returns a valid proof's header and claims with edits applied; a nil value deletes.
	change := func(header, claims map[string]any) (map[string]any, map[string]any) {
		h, c := validParts(t)
		for k, v := range header {
			h[k] = v
			if v == nil {
				delete(h, k)
			}
		}
		for k, v := range claims {
			c[k] = v
			if v == nil {
				delete(c, k)
			}
		}
		return h, c
	}
	signed := func(signAlg string, header, claims map[string]any) string {
		h, c := change(header, claims)
		return forge(t, ecKey, signAlg, h, c)
	}
	valid := signed("ES256", nil, nil)
	parts := strings.Split(valid, ".")
	otherClaims := base64.RawURLEncoding.EncodeToString([]byte(`{"htm":"GET","htu":"` + tokenURL + `","iat":1800000000,"jti":"x"}`))
	nonces := NonceSource{Key: []byte("0123456789abcdef0123456789abcdef")}
	staleNonce := nonces.Current(now.Add(-3 * time.Minute))
	useNonce := func(o *VerifyOptions) {
		o.Nonce = func(n string) error { return nonces.Check(n, now) }
	}
	for sentence, tc := range map[string]struct {
		proof string
		opts  func(*VerifyOptions)
		want  error
	}{
		"an empty proof is refused":                                  {"", nil, ErrInvalidProof},
		"a proof over 8 KiB is refused":                              {signed("ES256", nil, map[string]any{"pad": strings.Repeat("a", MaxProofLength)}), nil, ErrInvalidProof},
		"a string that is not a JWT is refused":                      {"not.a-jwt", nil, ErrInvalidProof},
		"a JWT of four parts is refused":                             {valid + ".x", nil, ErrInvalidProof},
		"a header that is not JSON is refused":                       {"e30x." + parts[1] + "." + parts[2], nil, ErrInvalidProof},
		"a proof whose typ is JWT is refused":                        {signed("ES256", map[string]any{"typ": "JWT"}, nil), nil, ErrInvalidProof},
		"a proof without typ is refused":                             {signed("ES256", map[string]any{"typ": nil}, nil), nil, ErrInvalidProof},
		"a proof with alg none is refused":                           {signed("none", map[string]any{"alg": "none"}, nil), nil, ErrInvalidProof},
		"a proof with alg HS256 is refused":                          {signed("HS256", map[string]any{"alg": "HS256"}, nil), nil, ErrInvalidProof},
		"a proof of an algorithm the verifier does not accept":       {signed("ES256", nil, nil), func(o *VerifyOptions) { o.Algorithms = []string{"EdDSA"} }, ErrInvalidProof},
		"a proof with crit is refused":                               {signed("ES256", map[string]any{"crit": []string{"exp"}}, nil), nil, ErrInvalidProof},
		"a proof without jwk is refused":                             {signed("ES256", map[string]any{"jwk": nil}, nil), nil, ErrInvalidProof},
		"a proof whose jwk holds the private key is refused":         {signed("ES256", map[string]any{"jwk": withPrivate}, nil), nil, ErrInvalidProof},
		"a proof whose jwk is not a key of its alg is refused":       {signed("ES256", map[string]any{"jwk": edJWK}, nil), nil, ErrInvalidProof},
		"a proof whose alg is not its key's is refused":              {signed("ES256", map[string]any{"alg": "RS256"}, nil), nil, ErrInvalidProof},
		"a proof signed by another key than its jwk is refused":      {forge(t, otherECKey, "ES256", validPartsHeader(t), validPartsClaims(t)), nil, ErrInvalidProof},
		"a proof whose claims were changed after signing is refused": {parts[0] + "." + otherClaims + "." + parts[2], nil, ErrInvalidProof},
		"a proof with a signature that is not base64url is refused":  {parts[0] + "." + parts[1] + ".***", nil, ErrInvalidProof},
		"a proof for another method is refused":                      {signed("ES256", nil, map[string]any{"htm": "GET"}), nil, ErrInvalidProof},
		"a proof without htm is refused":                             {signed("ES256", nil, map[string]any{"htm": nil}), nil, ErrInvalidProof},
		"a proof for another URL is refused":                         {signed("ES256", nil, map[string]any{"htu": "https://other.example/token"}), nil, ErrInvalidProof},
		"a proof without htu is refused":                             {signed("ES256", nil, map[string]any{"htu": nil}), nil, ErrInvalidProof},
		"a proof whose htu is not a string is refused":               {signed("ES256", nil, map[string]any{"htu": 1}), nil, ErrInvalidProof},
		"a proof older than MaxAge is refused":                       {signed("ES256", nil, map[string]any{"iat": now.Add(-DefaultMaxAge - time.Second).Unix()}), nil, ErrInvalidProof},
		"a proof older than a shorter MaxAge is refused":             {signed("ES256", nil, map[string]any{"iat": now.Add(-20 * time.Second).Unix()}), func(o *VerifyOptions) { o.MaxAge = 10 * time.Second }, ErrInvalidProof},
		"a proof from further in the future than the skew":           {signed("ES256", nil, map[string]any{"iat": now.Add(DefaultMaxClockSkew + time.Second).Unix()}), nil, ErrInvalidProof},
		"a proof without iat is refused":                             {signed("ES256", nil, map[string]any{"iat": nil}), nil, ErrInvalidProof},
		"a proof whose iat is a string is refused":                   {signed("ES256", nil, map[string]any{"iat": "1800000000"}), nil, ErrInvalidProof},
		"a proof whose iat is absurdly large is refused":             {signed("ES256", nil, map[string]any{"iat": 1e300}), nil, ErrInvalidProof},
		"a proof without jti is refused":                             {signed("ES256", nil, map[string]any{"jti": nil}), nil, ErrInvalidProof},
		"a proof with an empty jti is refused":                       {signed("ES256", nil, map[string]any{"jti": ""}), nil, ErrInvalidProof},
		"a proof with a jti over 256 bytes is refused":               {signed("ES256", nil, map[string]any{"jti": strings.Repeat("j", MaxJTILength+1)}), nil, ErrInvalidProof},
		"a proof without ath for an access token is refused":         {signed("ES256", nil, nil), func(o *VerifyOptions) { o.AccessToken = "the-token" }, ErrInvalidProof},
		"a proof whose ath is of another token is refused":           {signed("ES256", nil, map[string]any{"ath": TokenHash("another-token")}), func(o *VerifyOptions) { o.AccessToken = "the-token" }, ErrInvalidProof},
		"a proof without the required nonce asks for the nonce":      {signed("ES256", nil, nil), useNonce, ErrUseNonce},
		"a proof with a stale nonce asks for the nonce":              {signed("ES256", nil, map[string]any{"nonce": staleNonce}), useNonce, ErrUseNonce},
		"a proof with a made-up nonce asks for the nonce":            {signed("ES256", nil, map[string]any{"nonce": "made-up"}), useNonce, ErrUseNonce},
	} {
		t.Run(sentence, func(t *testing.T) {
			o := defaultVerifyOptions
			if tc.opts != nil {
				tc.opts(&o)
			}
			p, err := Verify(tc.proof, o)
			if !errors.Is(err, tc.want) || p != nil {
				t.Fatalf("got %+v, %v; want an error wrapping %q", p, err, tc.want)
			}
		})
	}
}

func validPartsHeader(t testing.TB) map[string]any { h, _ := validParts(t); return h }
func validPartsClaims(t testing.TB) map[string]any { _, c := validParts(t); return c }

func TestVerifyAcceptsWhatTheFlawedProofsLack(t *testing.T) {
	keys(t)
	nonces := NonceSource{Key: []byte("0123456789abcdef0123456789abcdef")}
	for sentence, tc := range map[string]struct {
		opts ProofOptions
		o    func(*VerifyOptions)
	}{
		"a proof with the token's ath is accepted for that token": {ProofOptions{Now: now, AccessToken: "the-token"}, func(o *VerifyOptions) { o.AccessToken = "the-token" }},
		"a proof with the current nonce is accepted":              {ProofOptions{Now: now, Nonce: nonces.Current(now)}, func(o *VerifyOptions) { o.Nonce = func(n string) error { return nonces.Check(n, now) } }},
		"a proof just under MaxAge old is accepted":               {ProofOptions{Now: now.Add(-DefaultMaxAge + time.Second)}, nil},
		"a proof within the skew in the future is accepted":       {ProofOptions{Now: now.Add(DefaultMaxClockSkew - time.Second)}, nil},
		"a nonce is ignored when none is required":                {ProofOptions{Now: now, Nonce: "anything"}, nil},
	} {
		t.Run(sentence, func(t *testing.T) {
			proof, err := NewProof(ecKey, "POST", tokenURL, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			o := defaultVerifyOptions
			if tc.o != nil {
				tc.o(&o)
			}
			if _, err := Verify(proof, o); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func FuzzVerifyRefusesWithATypedErrorAndNeverPanics(f *testing.F) {
	keys(f)
	valid, err := NewProof(ecKey, "POST", tokenURL, ProofOptions{Now: now, JTI: "j"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := Verify(proof, defaultVerifyOptions)
		switch {
		case err == nil && (p == nil || p.JKT == "" || p.JTI == ""):
			t.Fatalf("accepted with %+v", p)
		case err != nil && !errors.Is(err, ErrInvalidProof):
			t.Fatalf("error %v wraps neither sentinel", err)
		}
	})
}
