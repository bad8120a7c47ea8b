package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func billingClient(ns, name string) *m2mv1alpha1.M2MClient {
	return &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: m2mv1alpha1.M2MClientSpec{
			Scopes:      []m2mv1alpha1.Scope{"read:invoices", "write:payments"},
			Audiences:   []m2mv1alpha1.Audience{"https://payments.example.com"},
			TokenTTL:    &metav1.Duration{Duration: 10 * time.Minute},
			TokenClaims: m2mv1alpha1.TokenClaims{"team": {Raw: []byte(`"billing"`)}},
		},
	}
}

func credentialsOf(s *corev1.Secret, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID:     string(s.Data[m2mv1alpha1.SecretKeyClientID]),
		ClientSecret: string(s.Data[m2mv1alpha1.SecretKeyClientSecret]),
		TokenURL:     string(s.Data[m2mv1alpha1.SecretKeyTokenURL]),
		Scopes:       scopes,
	}
}

func TestAServiceGetsATokenWithClientCredentialsThatVerifiesAgainstTheJWKS(t *testing.T) {
	ns := namespace(t)
	obj := billingClient(ns, "billing")
	secret := readyClient(t, obj)
	if got := string(secret.Data[m2mv1alpha1.SecretKeyTokenURL]); got != issuer+"/oauth2/token" {
		t.Fatalf("token_url %q", got)
	}

	before := time.Now().Add(-time.Second).Unix()
	tok, err := credentialsOf(secret, "read:invoices").Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
		t.Fatalf("token %+v", tok)
	}
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok.AccessToken, claims, jwksKeyfunc(t),
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(issuer), jwt.WithAudience("https://payments.example.com"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("the token does not verify against the published JWKS: %v", err)
	}
	if parsed.Header["typ"] != "at+jwt" {
		t.Errorf("typ %v", parsed.Header["typ"])
	}
	id := obj.Status.ClientID
	for k, v := range map[string]any{"iss": issuer, "sub": id, "client_id": id, "aud": "https://payments.example.com", "scope": "read:invoices", "team": "billing"} {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	iat, _ := claims["iat"].(float64)
	nbf, _ := claims["nbf"].(float64)
	exp, _ := claims["exp"].(float64)
	if int64(iat) < before || nbf != iat || exp != iat+600 {
		t.Errorf("iat %v nbf %v exp %v: want iat now, nbf = iat, exp = iat + 10m", iat, nbf, exp)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(claims["jti"].(string)); err != nil || len(raw) < 16 {
		t.Errorf("jti %v", claims["jti"])
	}
}

// postToken posts body to the token endpoint as curl would.
func postToken(t *testing.T, contentType, body string) (int, map[string]any) {
	t.Helper()
	resp, err := testenv.PostToken(context.Background(), http.DefaultClient, issuer, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Body
}

func TestCurlWithAJSONOrFormBodyGetsAToken(t *testing.T) {
	ns := namespace(t)
	s := readyClient(t, billingClient(ns, "curl"))
	id, secret := string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	code, out := postToken(t, "application/json", `{"client_id":"`+id+`","client_secret":"`+secret+`","grant_type":"client_credentials","scope":"write:payments"}`)
	if code != 200 || out["scope"] != "write:payments" || out["access_token"] == nil {
		t.Fatalf("JSON body: %d %v", code, out)
	}
	code, out = postToken(t, "application/x-www-form-urlencoded", url.Values{"client_id": {id}, "client_secret": {secret}, "grant_type": {"client_credentials"}}.Encode())
	if code != 200 || out["scope"] != "read:invoices write:payments" {
		t.Fatalf("form body: %d %v", code, out)
	}
}

func invalidClient(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_client" && re.Response.StatusCode == http.StatusUnauthorized
}

func TestDisablingOrDeletingAClientStopsNewTokens(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "revoked")
	cc := credentialsOf(readyClient(t, obj))
	if _, err := cc.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.Spec.Disabled = true
		return env.Client.Update(ctx, obj)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if _, err := cc.Token(ctx); !invalidClient(err) {
			return fmt.Errorf("a disabled client got %v, want invalid_client", err)
		}
		return nil
	})

	other := billingClient(ns, "deleted")
	occ := credentialsOf(readyClient(t, other))
	if _, err := occ.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if _, err := occ.Token(ctx); !invalidClient(err) {
			return fmt.Errorf("a deleted client got %v, want invalid_client", err)
		}
		return nil
	})
}

func TestTheTokenServerSignsWithANewActiveKeyWithoutARestart(t *testing.T) {
	ctx := context.Background()
	cc := credentialsOf(readyClient(t, billingClient(namespace(t), "rekey")))
	var next *signingkeys.Key
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
			return err
		}
		set, err := signingkeys.Parse(s.Data[signingkeys.DataKey])
		if err != nil {
			return err
		}
		now := time.Now()
		set.Active().State, set.Active().RetiredAt = signingkeys.StateRetired, &now
		if next, err = signingkeys.Generate(signingkeys.EdDSA, signingkeys.StateActive, now); err != nil {
			return err
		}
		set.Keys = append(set.Keys, next)
		if s.Data[signingkeys.DataKey], err = set.Encode(); err != nil {
			return err
		}
		return env.Client.Update(ctx, s)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		tok, err := cc.Token(ctx)
		if err != nil {
			return err
		}
		parsed, err := jwt.Parse(tok.AccessToken, jwksKeyfunc(t), jwt.WithValidMethods([]string{"EdDSA"}))
		if err != nil {
			return err
		}
		if parsed.Header["kid"] != next.KID {
			return fmt.Errorf("signed with %v, not the new key %s", parsed.Header["kid"], next.KID)
		}
		return nil
	})
}

// metricsLines are the lines of the token server's /metrics.
func metricsLines(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return strings.Split(string(raw), "\n")
}

func metric(t *testing.T, name string) float64 {
	t.Helper()
	v, err := testenv.Metric(metricsURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTokensKeepComingWhileTheAPIServerIsDownAndTheCacheCatchesUpAfter(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	cc := credentialsOf(readyClient(t, billingClient(ns, "steady")))

	load := startConsumer(5*time.Millisecond, func() error {
		_, err := cc.Token(ctx)
		return err
	})
	testenv.Eventually(t, wait, func() error {
		if load.ok.Load() < 20 {
			return fmt.Errorf("%d tokens so far", load.ok.Load())
		}
		return nil
	})

	// A graceful stop that takes too long ends in SIGKILL, which is an outage all the same.
	if err := env.ControlPlane.APIServer.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		t.Fatal(err)
	}
	during := load.ok.Load()
	testenv.Eventually(t, wait, func() error {
		if load.ok.Load() < during+50 {
			return fmt.Errorf("%d tokens since the API server stopped", load.ok.Load()-during)
		}
		if s := metric(t, "m2m_client_cache_staleness_seconds"); s <= 0 {
			return fmt.Errorf("staleness %v while the API server is down", s)
		}
		return nil
	})
	if err := testenv.WaitOK(issuer+"/readyz", wait); err != nil {
		t.Fatalf("readyz failed while the API server was down: %v", err)
	}

	if err := env.ControlPlane.APIServer.Start(); err != nil {
		t.Fatal(err)
	}
	// A client created after the outage gets tokens: the cache caught up by itself.
	later := billingClient(ns, "after-outage")
	var lateCC *clientcredentials.Config
	testenv.Eventually(t, 2*wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(later), &m2mv1alpha1.M2MClient{}); err != nil {
			if err := env.Client.Create(ctx, later.DeepCopy()); err != nil {
				return err
			}
		}
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "after-outage-credentials"}, s); err != nil {
			return err
		}
		lateCC = credentialsOf(s)
		_, err := lateCC.Token(ctx)
		return err
	})
	testenv.Eventually(t, wait, func() error {
		if s := metric(t, "m2m_client_cache_staleness_seconds"); s != 0 {
			return fmt.Errorf("staleness %v after the API server returned", s)
		}
		return nil
	})
	load.stop()
	if load.failed.Load() != 0 {
		t.Fatalf("%d of %d token requests failed during the outage; first: %v", load.failed.Load(), load.failed.Load()+load.ok.Load(), load.firstErr.Load())
	}
}
