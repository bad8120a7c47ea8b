package m2mauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/inprocess"
)

// A client gets a token with the credentials of its mounted Secret; a resource server verifies it
// locally, for its own audience, and requires a scope. This runs against a token server started
// in the test.
func Example() {
	issuer, secretDir, stop := inprocess.TokenServer()
	defer stop()
	ctx := context.Background()

	// The client: credentials from the mounted Secret, a token for the billing service.
	ts, err := m2mauth.NewTokenSource(ctx, secretDir, m2mauth.Audiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}

	// The billing service: it accepts tokens for itself only.
	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	claims, err := v.Authenticate(ctx, tok.AccessToken, m2mauth.RequiredScopes("read:invoices"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.ClientID, claims.Scopes, claims.Audience)

	// Another service refuses the same token.
	other, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()
	_, err = other.Authenticate(ctx, tok.AccessToken)
	fmt.Println(errors.Is(err, m2mauth.ErrAudience))

	// The revocation-aware path: ask the token server (with the service's own credentials).
	in, err := m2mauth.NewIntrospector(secretDir, m2mauth.IntrospectionAudiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	info, err := in.Introspect(ctx, tok.AccessToken)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Active, info.ClientID)
	// Output:
	// m2m-example [read:invoices] [https://billing.example.com]
	// true
	// true m2m-example
}

// A resource server verifies tokens locally; the JWKS is discovered from the issuer's metadata.
// The audience is required: the identifier of this service.
func ExampleNewVerifier() {
	v, err := m2mauth.NewVerifier(context.Background(), "http://m2m-token-server.m2m-system.svc:8080",
		m2mauth.WithAudiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
}

func ExampleVerifier_Authenticate() {
	ctx := context.Background()
	v, err := m2mauth.NewVerifier(ctx, "http://m2m-token-server.m2m-system.svc:8080",
		m2mauth.WithAudiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	var token string // from the Authorization header
	reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	claims, err := v.Authenticate(reqCtx, token,
		m2mauth.RequiredScopes("read:invoices"),
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
	v, err := m2mauth.NewVerifier(context.Background(), "http://m2m-token-server.m2m-system.svc:8080",
		m2mauth.WithAudiences("https://billing.example.com"))
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

// A client calls a resource server with a token from its mounted Secret. When the resource server
// refuses the token as invalid (after an emergency signing-key rotation, say), the client gets a
// new one and sends the request again, once, without the caller noticing.
func ExampleNewClient() {
	ctx := context.Background()
	ts, err := m2mauth.NewTokenSource(ctx, "/var/run/secrets/m2m", m2mauth.Audiences("https://billing.example.com"))
	if err != nil {
		log.Fatal(err)
	}
	hc := m2mauth.NewClient(ctx, ts)
	resp, err := hc.Get("https://billing.example.com/invoices")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
}

// A service that must refuse a disabled or deleted client's token before it expires asks the
// token server, at the cost of a round trip per token every few seconds.
func ExampleIntrospector_Introspect() {
	in, err := m2mauth.NewIntrospector("/var/run/secrets/m2m",
		m2mauth.IntrospectionAudiences("https://billing.example.com"), m2mauth.IntrospectionCacheTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	var token string // from the Authorization header
	info, err := in.Introspect(context.Background(), token)
	switch {
	case err != nil:
		fmt.Println("cannot tell now: answer 503")
	case !info.Active:
		fmt.Println("revoked or invalid: answer 401")
	}
}
