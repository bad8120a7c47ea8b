package e2e

import (
	"context"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
)

// verifiesEverywhere checks that access, a token for https://payments.example.com, verifies as
// clientID's with pkg/m2mauth and with another JWT stack (go-oidc, on go-jose), each finding the
// keys through discovery.
func verifiesEverywhere(t *testing.T, access, clientID string) {
	t.Helper()
	ctx := context.Background()
	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if claims, err := v.Authenticate(ctx, access); err != nil || claims.ClientID != clientID || claims.Subject != clientID {
		t.Fatalf("m2mauth: %+v, %v", claims, err)
	}
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: "https://payments.example.com", SupportedSigningAlgs: []string{oidc.ES256}}).Verify(ctx, access)
	if err != nil || idt.Subject != clientID {
		t.Fatalf("go-oidc: %v", err)
	}
}
