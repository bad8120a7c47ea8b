package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// Tokens from the real token server verify with this project's library, discovering the JWKS
// from the issuer's metadata, and with go-oidc, an independent JOSE implementation.
func TestTokensFromTheTokenServerVerifyWithTheLibraryAndWithGoOIDC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := billingClient(namespace(t), "interop")
	tok, err := credentialsOf(readyClient(t, obj), "read:invoices").Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	claims, err := v.Authenticate(ctx, tok.AccessToken, m2mauth.RequiredScopes("read:invoices"))
	if err != nil {
		t.Fatalf("m2mauth: %v", err)
	}
	if claims.ClientID != obj.Status.ClientID || claims.Custom["team"] != "billing" {
		t.Fatalf("claims %+v", claims)
	}

	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: "https://payments.example.com", SupportedSigningAlgs: []string{oidc.ES256}}).Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("go-oidc: %v", err)
	}
	if idt.Subject != obj.Status.ClientID {
		t.Fatalf("go-oidc subject %q", idt.Subject)
	}
}

// writeVolume writes s's data in dir as the kubelet mounts a Secret.
func writeVolume(t *testing.T, dir string, s *corev1.Secret) {
	t.Helper()
	if err := volume.Project(dir, s.Data); err != nil {
		t.Fatal(err)
	}
}

// The token source keeps getting tokens across a real rotation by the manager, with no grace
// period: the old secret stops working at once, and only the volume's new files can help.
func TestTheTokenSourceSurvivesARealRotationWithoutARestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj := billingClient(namespace(t), "mounted")
	obj.Spec.TokenTTL = &metav1.Duration{Duration: time.Minute}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 0}
	s := readyClient(t, obj)
	dir := t.TempDir()
	writeVolume(t, dir, s)
	// Renew whenever less than a minute is left: every call asks the token server.
	ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.RefreshBefore(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	before, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	old := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		o := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), o); err != nil {
			return err
		}
		o.Spec.Rotation.Trigger = "rotate-now"
		return env.Client.Update(ctx, o)
	}); err != nil {
		t.Fatal(err)
	}
	fresh := &corev1.Secret{}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), fresh); err != nil {
			return err
		}
		if string(fresh.Data[m2mv1alpha1.SecretKeyClientSecret]) == old {
			return fmt.Errorf("not rotated yet")
		}
		return nil
	})
	// The old secret is refused as soon as the token server sees the rotation.
	testenv.Eventually(t, wait, func() error {
		if _, err := credentialsOf(s).Token(ctx); !invalidClient(err) {
			return fmt.Errorf("the old secret still works: %v", err)
		}
		return nil
	})
	writeVolume(t, dir, fresh)
	// A failed refresh still returns the cached token while it is valid; a new token shows that
	// the new secret was used.
	testenv.Eventually(t, wait, func() error {
		tok, err := ts.Token()
		if err != nil {
			return err
		}
		if tok.AccessToken == before.AccessToken {
			return fmt.Errorf("still the token from before the rotation")
		}
		return nil
	})
}

// Introspection against the real token server: a service introspects with its own mounted
// credentials, and sees a disabled client's token as inactive, while a local verifier without the
// revocation list still accepts it until it expires.
func TestTheIntrospectorSeesADisabledClientBeforeItsTokenExpires(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	caller := billingClient(ns, "caller")
	tok, err := credentialsOf(readyClient(t, caller)).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeVolume(t, dir, readyClient(t, billingClient(ns, "service")))
	in, err := m2mauth.NewIntrospector(dir, m2mauth.IntrospectionAudiences("https://payments.example.com"), m2mauth.IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := in.Introspect(ctx, tok.AccessToken); err != nil || !info.Active || info.ClientID != caller.Status.ClientID {
		t.Fatalf("before: %+v, %v", info, err)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(caller), caller); err != nil {
			return err
		}
		caller.Spec.Disabled = true
		return env.Client.Update(ctx, caller)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		info, err := in.Introspect(ctx, tok.AccessToken)
		if err != nil {
			return err
		}
		if info.Active {
			return fmt.Errorf("the disabled client's token is still active")
		}
		return nil
	})
	// A local verifier without the revocation list (as go-oidc and older versions of this
	// library are) still accepts it: only introspection and the list see the disable.
	v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://payments.example.com"), m2mauth.WithoutRevocation())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Authenticate(ctx, tok.AccessToken); err != nil {
		t.Fatalf("the local verifier without the revocation list refused the token: %v", err)
	}
}
