package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/oauth2"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// DPoP end to end, against the real manager and token server: a client that requires DPoP gets a
// bound token through pkg/m2mauth's token source with a key of its own, a resource server using
// the library accepts it with the transport's proof, and the same token taken without the key
// (sent as a bearer token, or as a bare DPoP token) is refused; a token request without a proof
// is refused with invalid_dpop_proof.
func TestADPoPBoundTokenWorksWithItsKeyAndIsUselessWithout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := billingClient(namespace(t), "bound")
	obj.Spec.DPoP = &m2mv1alpha1.DPoPPolicy{Required: true}
	s := readyClient(t, obj)
	dir := mount(t, s)

	if _, err := credentialsOf(s).Token(ctx); err == nil || !containsError(err, "invalid_dpop_proof") {
		t.Fatalf("a token request without a proof from a client that requires DPoP: %v, want invalid_dpop_proof", err)
	}
	ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.DPoP())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("a token with DPoP: %v", err)
	}
	if tok.Type() != "DPoP" {
		t.Fatalf("token type %q, want DPoP", tok.Type())
	}

	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	api := httptest.NewServer(m2mauth.Middleware(v)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	defer api.Close()

	resp, err := m2mauth.NewClient(ctx, ts).Get(api.URL + "/invoices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the resource server answered %d to the bound token with its proof", resp.StatusCode)
	}

	for scheme := range map[string]bool{"Bearer": true, "DPoP": true} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/invoices", nil)
		req.Header.Set("Authorization", scheme+" "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the stolen token sent as %s without a proof got %d, want 401", scheme, resp.StatusCode)
		}
	}
}

// containsError reports whether err is an OAuth error answer with code.
func containsError(err error, code string) bool {
	re, ok := err.(*oauth2.RetrieveError)
	return ok && re.ErrorCode == code
}
