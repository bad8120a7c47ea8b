package m2mauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// A resource server verifies tokens locally; the JWKS is discovered from the issuer's metadata.
func ExampleNewVerifier() {
	ctx := context.Background()
	v, err := m2mauth.NewVerifier(ctx, "http://m2m-token-server.m2m-system.svc:8080")
	if err != nil {
		log.Fatal(err)
	}
	_ = v
}

func ExampleVerifier_Authenticate() {
	ctx := context.Background()
	v, err := m2mauth.NewVerifier(ctx, "http://m2m-token-server.m2m-system.svc:8080")
	if err != nil {
		log.Fatal(err)
	}
	var token string // from the Authorization header
	claims, err := v.Authenticate(ctx, token,
		m2mauth.RequiredScopes("read:invoices"),
		m2mauth.Audience("https://billing.example.com"),
		m2mauth.MaxTokenAge(15*time.Minute),
	)
	switch {
	case errors.Is(err, m2mauth.ErrExpired):
		fmt.Println("expired: get a new token")
	case errors.Is(err, m2mauth.ErrMissingScope):
		fmt.Println("forbidden")
	case err != nil:
		fmt.Println("invalid token")
	default:
		fmt.Println("hello,", claims.ClientID)
	}
}

func ExampleMiddleware() {
	v, err := m2mauth.NewVerifier(context.Background(), "http://m2m-token-server.m2m-system.svc:8080")
	if err != nil {
		log.Fatal(err)
	}
	invoices := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := m2mauth.ClaimsFromContext(r.Context())
		fmt.Fprintln(w, "invoices for", claims.ClientID)
	})
	http.Handle("/invoices", m2mauth.Middleware(v, m2mauth.RequiredScopes("read:invoices"))(invoices))
}

// A client reads its credentials from the mounted Secret, and keeps working when it rotates.
func ExampleNewTokenSource() {
	ctx := context.Background()
	ts, err := m2mauth.NewTokenSource(ctx, "/var/run/secrets/m2m", m2mauth.Scopes("read:invoices"))
	if err != nil {
		log.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://billing.example.com/invoices", nil)
	tok.SetAuthHeader(req)
}
