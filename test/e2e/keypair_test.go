package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// mount writes a Secret's data as the kubelet would project it into a pod, and returns the
// directory.
func mount(t *testing.T, s *corev1.Secret) string {
	t.Helper()
	dir := t.TempDir()
	for k, v := range s.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// keyAssertion signs an RFC 7523 §3 assertion for id with the PEM key, naming kid.
func keyAssertion(t *testing.T, pemKey []byte, id, kid, jti string) string {
	t.Helper()
	key, pub, err := jwk.ParsePrivateKeyPEM(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	if kid == "" {
		kid = pub.KeyID
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(pub.Algorithm), jwt.MapClaims{"iss": id, "sub": id, "aud": issuer,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": jti})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// A client whose key pair the manager generates: no secret exists anywhere, the private key is in
// the Secret and the public key in status; the mounted Secret, the library and kubectl m2m get
// tokens with it that verify with two JWT stacks; another key, a replayed assertion and a secret
// are refused; and switching back to a secret keeps the key accepted for the grace period only.
func TestAGeneratedKeyPairGetsTokensWithNoSecretAnywhere(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "key-client")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 20 * time.Second}
	s := readyClient(t, obj)
	id := obj.Status.ClientID
	pemKey := s.Data[m2mv1alpha1.SecretKeyPrivateKey]
	if _, hasSecret := s.Data[m2mv1alpha1.SecretKeyClientSecret]; hasSecret || len(pemKey) == 0 || len(s.Data[m2mv1alpha1.SecretKeyIssuer]) == 0 {
		t.Fatalf("the Secret of a key-pair client has keys %v", keysOf(s.Data))
	}
	entries := obj.Status.AcceptedSecrets
	if len(entries) != 1 || entries[0].PublicKey == nil || entries[0].PublicKey.Algorithm != "ES256" || entries[0].LastFour != "" ||
		entries[0].Hash != (credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}).Fingerprint(string(pemKey)) {
		t.Fatalf("status does not hold the public key of the Secret's private key: %+v", entries)
	}

	// The pod's way: the mounted Secret and pkg/m2mauth.
	var access string
	testenv.Eventually(t, wait, func() error {
		ts, err := m2mauth.NewTokenSource(ctx, mount(t, s), m2mauth.Audiences("https://payments.example.com"))
		if err != nil {
			return err
		}
		tok, err := ts.Token()
		if err != nil {
			return err
		}
		access = tok.AccessToken
		return nil
	})
	verifiesEverywhere(t, access, id)

	// The operator's way: kubectl m2m token.
	code, out, errOut := kubectlM2M("token", "key-client", "--audience", "https://payments.example.com", "-n", ns, "--kubeconfig", kubeconfigFile(t))
	if code != 0 {
		t.Fatalf("kubectl m2m token: %d %s", code, errOut)
	}
	verifiesEverywhere(t, strings.TrimSpace(out), id)

	other, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
	if err != nil {
		t.Fatal(err)
	}
	replayed := keyAssertion(t, pemKey, id, "", "once")
	if code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, replayed, nil)); code != http.StatusOK {
		t.Fatalf("a fresh assertion: %d %v", code, body)
	}
	for sentence, req := range map[string]string{
		"the same assertion again (one replica, one replay cache)": assertionRequest(id, replayed, nil),
		"another key named with the client's kid":                  assertionRequest(id, keyAssertion(t, []byte(other), id, entries[0].PublicKey.KeyID, "other-key"), nil),
		"the thumbprint input as a client secret": url.Values{"grant_type": {"client_credentials"}, "client_id": {id},
			"client_secret": {`{"crv":"P-256","kty":"EC","x":"` + entries[0].PublicKey.X + `","y":"` + entries[0].PublicKey.Y + `"}`}}.Encode(),
	} {
		if code, body := postToken(t, "application/x-www-form-urlencoded", req); code != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Errorf("%s: %d %v, want 401 invalid_client", sentence, code, body)
		}
	}

	// Back to a client secret: the Secret carries a secret and no key, and the key is accepted
	// until the grace period ends, then refused.
	key := client.ObjectKeyFromObject(obj)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		o := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(ctx, key, o); err != nil {
			return err
		}
		o.Spec.Authentication.KeyPair = nil
		return env.Client.Update(ctx, o)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		now := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: obj.Status.SecretName}, now); err != nil {
			return err
		}
		if _, hasKey := now.Data[m2mv1alpha1.SecretKeyPrivateKey]; hasKey || len(now.Data[m2mv1alpha1.SecretKeyClientSecret]) == 0 {
			return fmt.Errorf("the Secret has keys %v", keysOf(now.Data))
		}
		if _, err := credentialsOf(now).Token(ctx); err != nil {
			return err
		}
		return nil
	})
	if code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, keyAssertion(t, pemKey, id, "", "in-grace"), nil)); code != http.StatusOK {
		t.Fatalf("the previous key within its grace period: %d %v", code, body)
	}
	testenv.Eventually(t, time.Minute, func() error {
		code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, keyAssertion(t, pemKey, id, "", fmt.Sprint(time.Now().UnixNano())), nil))
		if code != http.StatusUnauthorized {
			return fmt.Errorf("the previous key after its grace period: %d %v", code, body)
		}
		return nil
	})
}
