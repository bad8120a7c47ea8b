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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// serviceAccountToken creates the ServiceAccount ns/name if needed and returns a token for it
// from the TokenRequest API, as the kubelet projects one into a pod.
func serviceAccountToken(t *testing.T, ns, name string, audiences ...string) string {
	t.Helper()
	return serviceAccountTokenFor(t, ns, name, 10*time.Minute, audiences...)
}

// serviceAccountTokenFor is serviceAccountToken with a chosen lifetime.
func serviceAccountTokenFor(t *testing.T, ns, name string, lifetime time.Duration, audiences ...string) string {
	t.Helper()
	return testenv.ServiceAccountToken(t, env.Client, ns, name, lifetime, audiences...)
}

func assertionRequest(clientID, assertion string, extra url.Values) string {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID},
		"client_assertion_type": {tokenserver.JWTBearerAssertion}, "client_assertion": {assertion}}
	for k, v := range extra {
		form[k] = v
	}
	return form.Encode()
}

// A client that allows a ServiceAccount of its namespace, and takes no secret: no secret exists
// anywhere, and a token of that ServiceAccount, for the token server's issuer, gets an access
// token that verifies with pkg/m2mauth and go-oidc. Every mismatch is invalid_client, and two
// kinds of credentials at once are invalid_request.
func TestAServiceAccountTokenGetsATokenForTheClientThatAllowsIt(t *testing.T) {
	ns, other := namespace(t), namespace(t)
	obj := billingClient(ns, "worker-client")
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), ServiceAccounts: []string{"worker"}}
	s := readyClient(t, obj)
	if _, ok := s.Data[m2mv1alpha1.SecretKeyClientSecret]; ok || len(obj.Status.AcceptedSecrets) != 0 {
		t.Fatalf("a client without secrets has one: Secret keys %v, accepted %d", keysOf(s.Data), len(obj.Status.AcceptedSecrets))
	}
	id := string(s.Data[m2mv1alpha1.SecretKeyClientID])
	if id != obj.Status.ClientID || string(s.Data[m2mv1alpha1.SecretKeyTokenURL]) == "" {
		t.Fatalf("the Secret %v does not name the client", keysOf(s.Data))
	}
	secretClient := readyClient(t, billingClient(ns, "secret-client"))
	worker := serviceAccountToken(t, ns, "worker", issuer)

	testenv.Eventually(t, wait, func() error {
		code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, worker, nil))
		if code != http.StatusOK {
			return fmt.Errorf("%d %v", code, body)
		}
		return nil
	})
	_, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, worker, nil))
	verifiesEverywhere(t, body["access_token"].(string), id)

	for sentence, req := range map[string]string{
		"a ServiceAccount the client does not name":           assertionRequest(id, serviceAccountToken(t, ns, "other", issuer), nil),
		"the same name in another namespace":                  assertionRequest(id, serviceAccountToken(t, other, "worker", issuer), nil),
		"a token for another audience":                        assertionRequest(id, serviceAccountToken(t, ns, "worker", "https://elsewhere.example.com"), nil),
		"the right token for a client that does not allow it": assertionRequest(string(secretClient.Data[m2mv1alpha1.SecretKeyClientID]), worker, nil),
		"an unknown client":                                   assertionRequest("m2m-nobody", worker, nil),
		"a tampered token":                                    assertionRequest(id, worker[:len(worker)-4]+"AAAA", nil),
		"a secret for a client that takes none":               url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {string(secretClient.Data[m2mv1alpha1.SecretKeyClientSecret])}}.Encode(),
	} {
		if code, body := postToken(t, "application/x-www-form-urlencoded", req); code != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Errorf("%s: %d %v, want 401 invalid_client", sentence, code, body)
		}
	}
	both := assertionRequest(id, worker, url.Values{"client_secret": {"anything-at-all"}})
	if code, body := postToken(t, "application/x-www-form-urlencoded", both); code != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Errorf("an assertion and a client_secret: %d %v, want 400 invalid_request", code, body)
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// pkg/m2mauth's ServiceAccount token source: the client's Secret (no client_secret) and a
// projected token file. The kubelet replaces the file before the token expires; the source reads
// it for every request, so a replaced file is what it sends next.
func TestTheServiceAccountTokenSourceReadsTheProjectedTokenForEachRequest(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "projected")
	obj.Spec.TokenTTL = &metav1.Duration{Duration: time.Minute}
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), ServiceAccounts: []string{"runner"}}
	dir := t.TempDir()
	writeVolume(t, dir, readyClient(t, obj))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(serviceAccountToken(t, ns, "runner", issuer)), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := m2mauth.NewServiceAccountTokenSource(ctx, dir, tokenFile, m2mauth.RefreshBefore(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		_, err := ts.Token()
		return err
	})
	// A token of a ServiceAccount the client does not allow, as if the pod's identity changed:
	// the next request, which reads the file again, is refused.
	if err := os.WriteFile(tokenFile, []byte(serviceAccountToken(t, ns, "intruder", issuer)), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := m2mauth.RequestTimeout(5 * time.Second)
	fresh, err := m2mauth.NewServiceAccountTokenSource(ctx, dir, tokenFile, cc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Token(); !invalidClient(err) {
		t.Fatalf("a ServiceAccount the client does not allow: %v, want invalid_client", err)
	}
}

// kubectl m2m token --service-account gets a token as a pod running as that ServiceAccount would,
// through the TokenRequest API, for a client that takes no secret.
func TestKubectlM2MGetsATokenAsAServiceAccount(t *testing.T) {
	kc := kubeconfigFile(t)
	ns := namespace(t)
	obj := billingClient(ns, "sa-cli")
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), ServiceAccounts: []string{"cli-runner"}}
	readyClient(t, obj)
	serviceAccountToken(t, ns, "cli-runner", issuer) // creates the ServiceAccount
	common := []string{"-n", ns, "--kubeconfig", kc}
	testenv.Eventually(t, wait, func() error {
		code, out, errOut := kubectlM2M(append([]string{"token", "sa-cli", "--service-account", "cli-runner"}, common...)...)
		if code != 0 || strings.Count(strings.TrimSpace(out), ".") != 2 {
			return fmt.Errorf("%d %q %s", code, out, errOut)
		}
		return nil
	})
	serviceAccountToken(t, ns, "stranger", issuer)
	if code, _, errOut := kubectlM2M(append([]string{"token", "sa-cli", "--service-account", "stranger"}, common...)...); code != 1 || !strings.Contains(errOut, "invalid_client") {
		t.Fatalf("a ServiceAccount the client does not allow: %d %s", code, errOut)
	}
}

// A client whose key pair is held outside the cluster registers its public key and gets tokens
// with assertions it signs (private_key_jwt); the tokens verify with pkg/m2mauth and go-oidc. A
// key whose type and algorithm disagree is refused by the API server.
func TestAClientWithItsOwnKeyPairGetsTokensWithPrivateKeyJWT(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub := key.PublicJWK()
	bad := billingClient(ns, "mismatched")
	bad.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), PublicKeys: []m2mv1alpha1.ClientPublicKey{{
		KeyID: "k", KeyType: "EC", Algorithm: "RS256", Curve: "P-256", X: pub.X, Y: pub.Y}}}
	if err := env.Client.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Fatalf("an EC key for RS256: %v, want Invalid", err)
	}
	obj := billingClient(ns, "hsm-client")
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), PublicKeys: []m2mv1alpha1.ClientPublicKey{{
		KeyID: pub.KeyID, KeyType: pub.KeyType, Algorithm: pub.Algorithm, Curve: pub.Curve, X: pub.X, Y: pub.Y}}}
	id := string(readyClient(t, obj).Data[m2mv1alpha1.SecretKeyClientID])
	sign := func() string {
		tok := jwt.NewWithClaims(key.Method(), jwt.MapClaims{"iss": id, "sub": id, "aud": issuer,
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": fmt.Sprint(time.Now().UnixNano())})
		tok.Header["kid"] = key.KID
		s, err := tok.SignedString(key.SigningKey())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var access string
	testenv.Eventually(t, wait, func() error {
		code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, sign(), nil))
		if code != http.StatusOK {
			return fmt.Errorf("%d %v", code, body)
		}
		access = body["access_token"].(string)
		return nil
	})
	verifiesEverywhere(t, access, id)
}
