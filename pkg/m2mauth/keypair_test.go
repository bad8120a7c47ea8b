package m2mauth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/oauth2"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/inprocess"
)

// A Secret with a generated key pair gets tokens with no secret: each request signs a fresh
// assertion (the token server refuses a replayed jti, so two requests prove two jtis), and the
// service's Introspector authenticates the same way.
func TestAMountedKeyPairGetsTokensAndIntrospects(t *testing.T) {
	for _, alg := range []m2mv1alpha1.KeyAlgorithm{m2mv1alpha1.KeyAlgorithmES256, m2mv1alpha1.KeyAlgorithmEdDSA, m2mv1alpha1.KeyAlgorithmRS256} {
		t.Run(string(alg), func(t *testing.T) {
			issuer, dir, stop := inprocess.KeyPairTokenServer(alg)
			defer stop()
			ctx := context.Background()
			ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.Audiences("https://billing.example.com"), m2mauth.RefreshBefore(24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			first, err := ts.Token()
			if err != nil {
				t.Fatal(err)
			}
			second, err := ts.Token() // RefreshBefore a day: every call asks the token server
			if err != nil {
				t.Fatalf("a second request (a new assertion) failed: %v", err)
			}
			if first.AccessToken == second.AccessToken {
				t.Fatal("the second call did not ask the token server")
			}
			v, err := m2mauth.NewVerifier(ctx, issuer, m2mauth.WithAudiences("https://billing.example.com"))
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if claims, err := v.Authenticate(ctx, second.AccessToken); err != nil || claims.ClientID != "m2m-example" {
				t.Fatalf("the token does not verify: %v %+v", err, claims)
			}
			in, err := m2mauth.NewIntrospector(dir, m2mauth.IntrospectionAudiences("https://billing.example.com"))
			if err != nil {
				t.Fatal(err)
			}
			if info, err := in.Introspect(ctx, second.AccessToken); err != nil || !info.Active {
				t.Fatalf("introspection with the key pair: %+v %v", info, err)
			}
		})
	}
}

// opaqueSigner hides the key's type, as an HSM or KMS signer does: only Public and Sign.
type opaqueSigner struct{ inner crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.inner.Public() }
func (o opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.inner.Sign(r, digest, opts)
}

// A key held outside the process signs through crypto.Signer alone, for every algorithm.
func TestAPrivateKeyTokenSourceSignsThroughAnyCryptoSigner(t *testing.T) {
	for _, alg := range []m2mv1alpha1.KeyAlgorithm{m2mv1alpha1.KeyAlgorithmES256, m2mv1alpha1.KeyAlgorithmEdDSA, m2mv1alpha1.KeyAlgorithmRS256} {
		t.Run(string(alg), func(t *testing.T) {
			issuer, dir, stop := inprocess.KeyPairTokenServer(alg)
			defer stop()
			pemKey, err := os.ReadFile(filepath.Join(dir, "private_key"))
			if err != nil {
				t.Fatal(err)
			}
			key, _, err := jwk.ParsePrivateKeyPEM(pemKey)
			if err != nil {
				t.Fatal(err)
			}
			tokenURL, _ := os.ReadFile(filepath.Join(dir, "token_url"))
			ts, err := m2mauth.NewPrivateKeyTokenSource(context.Background(), m2mauth.PrivateKeyClient{
				ClientID: "m2m-example", TokenURL: string(tokenURL), Issuer: issuer, Key: opaqueSigner{key}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ts.Token(); err != nil {
				t.Fatalf("the opaque signer's assertion was refused: %v", err)
			}
			// Another key, even named with the right kid, is refused.
			other, _, _ := jwk.ParsePrivateKeyPEM(mustIssue(t))
			pub, _ := jwk.FromPublicKey(key.Public())
			kid, _ := pub.Thumbprint()
			ts, _ = m2mauth.NewPrivateKeyTokenSource(context.Background(), m2mauth.PrivateKeyClient{
				ClientID: "m2m-example", TokenURL: string(tokenURL), Issuer: issuer, Key: other, KeyID: kid})
			var re *oauth2.RetrieveError
			if _, err := ts.Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
				t.Fatalf("another key got %v, want invalid_client", err)
			}
		})
	}
}

func TestAPrivateKeyClientWithoutItsFieldsIsRefused(t *testing.T) {
	key, _, _ := jwk.ParsePrivateKeyPEM(mustIssue(t))
	for name, c := range map[string]m2mauth.PrivateKeyClient{
		"no issuer": {ClientID: "c", TokenURL: "https://t/oauth2/token", Key: key},
		"no key":    {ClientID: "c", TokenURL: "https://t/oauth2/token", Issuer: "https://t"},
	} {
		if _, err := m2mauth.NewPrivateKeyTokenSource(context.Background(), c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustIssue(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwk.MarshalPrivateKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
