package rotation

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

func jwks(t *testing.T) jwk.Set {
	t.Helper()
	return testenv.JWKS(t, issuer)
}

func published(set jwk.Set, kid string) bool {
	for _, k := range set.Keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// verifies checks a token against the JWKS as a resource server would, at the fake clock's time.
func verifies(t *testing.T, token string) error {
	t.Helper()
	_, err := jwt.Parse(token, testenv.Keyfunc(jwks(t)), jwt.WithTimeFunc(clk.Now), jwt.WithValidMethods([]string{"ES256"}))
	return err
}

func issue(t *testing.T, id, secret string) (token, kid string) {
	t.Helper()
	resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, issuer, id, secret)
	if err != nil {
		t.Fatal(err)
	}
	if resp.AccessToken == "" {
		t.Fatalf("token request: %d %s", resp.Status, resp.Raw)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(resp.AccessToken, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.AccessToken, parsed.Header["kid"].(string)
}

// pokeKeys nudges the signing-key controller to look at the keys at the fake clock's time.
func pokeKeys(t *testing.T) {
	t.Helper()
	testenv.Poke(t, env.Client, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name}})
}

func TestASigningKeyIsPublishedBeforeItSignsAndARetiredKeyVerifiesItsTokensUntilTheyExpire(t *testing.T) {
	key := create(t, rotatingClient(sharedNamespace, "keys", func(o *m2mv1alpha1.M2MClient) {
		o.Spec.TokenTTL = &metav1.Duration{Duration: 24 * time.Hour}
	}))
	obj, secret := settled(t, key, nil)
	id := obj.Status.ClientID
	tokenEventually(t, id, secret, http.StatusOK)
	_, oldKid := issue(t, id, secret)
	p := signingkeys.DefaultPolicy

	// Not yet a day before the period ends: nothing new is published.
	clk.Step(p.Period - p.Prepublish - time.Hour)
	pokeKeys(t)
	time.Sleep(500 * time.Millisecond)
	if n := len(jwks(t).Keys); n != 1 {
		t.Fatalf("%d keys published before the next key is due", n)
	}

	// A day before: the next key is published, and does not sign yet.
	clk.Step(time.Hour + time.Second)
	pokeKeys(t)
	var nextKid string
	testenv.Eventually(t, wait, func() error {
		set := jwks(t)
		if len(set.Keys) != 2 {
			return fmt.Errorf("%d keys published", len(set.Keys))
		}
		for _, k := range set.Keys {
			if k.KeyID != oldKid {
				nextKid = k.KeyID
			}
		}
		return nil
	})
	if _, kid := issue(t, id, secret); kid != oldKid {
		t.Fatalf("the next key %s signed as soon as it was published", kid)
	}

	// A minute before it takes over, the old key still signs.
	clk.Step(p.Prepublish - time.Minute)
	pokeKeys(t)
	time.Sleep(500 * time.Millisecond)
	before, kid := issue(t, id, secret)
	if kid != oldKid {
		t.Fatalf("the next key %s signed before its prepublish time was over", kid)
	}

	// At the end of the period the next key signs; the old one retires and stays published.
	clk.Step(time.Minute)
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		if _, kid := issue(t, id, secret); kid != nextKid {
			return fmt.Errorf("signed with %s, want the new key %s", kid, nextKid)
		}
		return nil
	})
	if err := verifies(t, before); err != nil {
		t.Fatalf("a token signed by the retired key does not verify before it expires: %v", err)
	}

	// Once every token of the retired key has expired, the key leaves the JWKS.
	clk.Step(p.Retention)
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		if published(jwks(t), oldKid) {
			return fmt.Errorf("the retired key is still published")
		}
		return nil
	})
	after, _ := issue(t, id, secret)
	if err := verifies(t, after); err != nil {
		t.Fatalf("a token of the new key does not verify: %v", err)
	}
}

// The key that authenticates status rotates like the signing keys: its successor is published
// first, then signs, every status is sealed again with it, and the old key goes once no status
// uses it. A client's secret is accepted at every step.
func TestTheStatusKeyRotatesWithoutRefusingASecret(t *testing.T) {
	key := create(t, rotatingClient(sharedNamespace, "status-keys", nil))
	obj, secret := settled(t, key, nil)
	id := obj.Status.ClientID
	tokenEventually(t, id, secret, http.StatusOK)
	accepted := func(step string) {
		t.Helper()
		if code := tokenStatus(t, id, secret); code != http.StatusOK {
			t.Fatalf("%s: the client's secret got %d", step, code)
		}
	}
	old := statusKeys(t).Active()
	if due := old.ActiveAt.Add(statusmac.DefaultPeriod); clk.Now().Before(due) {
		clk.Step(due.Sub(clk.Now()))
	}
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		if set := statusKeys(t); len(set.Keys) < 2 && set.Active().ID == old.ID {
			return fmt.Errorf("no successor of status key %s yet", old.ID)
		}
		return nil
	})
	accepted("successor published")
	// In a cluster the successor is known for five minutes before it signs; give the token
	// server a moment of real time to load it.
	time.Sleep(time.Second)

	clk.Step(statusmac.Prepublish)
	pokeKeys(t)
	var next string
	testenv.Eventually(t, wait, func() error {
		if next = statusKeys(t).Active().ID; next == old.ID {
			return fmt.Errorf("status key %s still signs", old.ID)
		}
		if err := env.Client.Get(context.Background(), key, obj); err != nil {
			return err
		}
		if !strings.Contains(obj.Status.ClientIDMAC, "."+next+".") {
			return fmt.Errorf("the client's status is not sealed with %s yet", next)
		}
		return nil
	})
	accepted("successor signs")

	clk.Step(statusmac.RetiredMinimum)
	pokeKeys(t)
	testenv.Eventually(t, wait, func() error {
		for _, k := range statusKeys(t).Keys {
			if k.ID == old.ID {
				return fmt.Errorf("the retired status key %s is still there", old.ID)
			}
		}
		return nil
	})
	accepted("old key dropped")
}
