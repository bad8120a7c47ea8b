package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A client stored with reserved claim names in another case (before the admission policy; this
// suite installs none) gets tokens whose sub, client_id, scope and exp are the real ones, as
// go-oidc and golang-jwt's struct claims read them: both match names ignoring case.
func TestStoredReservedClaimNamesDoNotOverrideTheRealClaims(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := billingClient(namespace(t), "sneaky")
	obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims{
		"SUB": {Raw: []byte(`"m2m-victim"`)}, "Client_ID": {Raw: []byte(`"m2m-victim"`)},
		"EXP": {Raw: []byte(`4102444800`)}, "Scope": {Raw: []byte(`"admin:*"`)},
		"team": apiextensionsv1.JSON{Raw: []byte(`"billing"`)},
	}
	tok, err := credentialsOf(readyClient(t, obj), "read:invoices").Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := obj.Status.ClientID

	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: "https://payments.example.com", SupportedSigningAlgs: []string{oidc.ES256}}).Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("go-oidc: %v", err)
	}
	if idt.Subject != id || idt.Expiry.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("go-oidc reads sub %q and exp %v, want %q and the client's 10m TTL", idt.Subject, idt.Expiry, id)
	}

	var claims struct {
		jwt.RegisteredClaims
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
	}
	if _, err := jwt.ParseWithClaims(tok.AccessToken, &claims, jwksKeyfunc(t), jwt.WithValidMethods([]string{"ES256"})); err != nil {
		t.Fatal(err)
	}
	if claims.Subject != id || claims.ClientID != id || claims.Scope != "read:invoices" || claims.ExpiresAt.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("golang-jwt reads sub %q client_id %q scope %q exp %v", claims.Subject, claims.ClientID, claims.Scope, claims.ExpiresAt)
	}
}

// A tokenClaims value that names a trustedMetadata entry follows it: after the entry changes, the
// next token carries the new value, with no change to the claim itself.
func TestAChangeOfTrustedMetadataReachesTheNextToken(t *testing.T) {
	ctx := context.Background()
	obj := billingClient(namespace(t), "templated")
	obj.Spec.TrustedMetadata = map[string]apiextensionsv1.JSON{"api_version": {Raw: []byte(`"v1"`)}}
	obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims{"version": {Raw: []byte(`"api-${api_version}"`)}}
	creds := credentialsOf(readyClient(t, obj), "read:invoices")
	version := func() (string, error) {
		tok, err := creds.Token(ctx)
		if err != nil {
			return "", err
		}
		var claims struct {
			jwt.RegisteredClaims
			Version string `json:"version"`
		}
		if _, err := jwt.ParseWithClaims(tok.AccessToken, &claims, jwksKeyfunc(t), jwt.WithValidMethods([]string{"ES256"})); err != nil {
			return "", err
		}
		return claims.Version, nil
	}
	if v, err := version(); err != nil || v != "api-v1" {
		t.Fatalf("version = %q (%v), want api-v1", v, err)
	}

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		o := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), o); err != nil {
			return err
		}
		o.Spec.TrustedMetadata["api_version"] = apiextensionsv1.JSON{Raw: []byte(`"v2"`)}
		return env.Client.Update(ctx, o)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if v, err := version(); err != nil || v != "api-v2" {
			return fmt.Errorf("version = %q (%v), want api-v2", v, err)
		}
		return nil
	})
}
