package m2mauth

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// BenchmarkAuthenticate and BenchmarkRawVerify run on the same token: the library's whole check
// against golang-jwt verifying the signature with the key in hand and nothing else.
func BenchmarkAuthenticate(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	srv := newJWKSServer(b, ec)
	v := newTestVerifier(b, srv)
	token := mint(b, ec, goodClaims(srv.URL), nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Authenticate(ctx, token, RequiredScopes("read:users"), RequiredAudience("https://api.example.com")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawVerify(b *testing.B) {
	ec := genKey(b, signingkeys.ES256)
	token := mint(b, ec, goodClaims("https://issuer"), nil)
	pub := ec.Signer().Public()
	parser := jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return t0.Add(time.Minute) }))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parser.Parse(token, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
			b.Fatal(err)
		}
	}
}
