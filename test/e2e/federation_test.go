package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// federated is the issuer of another platform that the suite's token server trusts
// (--federated-issuer): it serves a discovery document and a JWKS, and can rotate its key and go
// down.
var federated *federatedIssuer

type federatedIssuer struct {
	*httptest.Server
	mu     sync.Mutex
	keys   []*signingkeys.Key
	signer *signingkeys.Key
	down   atomic.Bool
}

func newFederatedIssuer() *federatedIssuer {
	f := &federatedIssuer{}
	f.rotate()
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			writeJSONBody(w, map[string]string{"issuer": f.URL, "jwks_uri": f.URL + "/keys"})
		case "/keys":
			set := jwk.Set{Keys: []jwk.Key{}}
			for _, k := range f.keys {
				set.Keys = append(set.Keys, k.PublicJWK())
			}
			writeJSONBody(w, set)
		default:
			http.NotFound(w, r)
		}
	}))
	return f
}

// rotate publishes a new key and signs with it from now on.
func (f *federatedIssuer) rotate() {
	k, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, time.Now())
	if err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, k)
	f.signer = k
}

// token is a token of this issuer for subject and audience, as a CI system or another cluster
// would issue one.
func (f *federatedIssuer) token(t *testing.T, subject, audience string) string {
	t.Helper()
	f.mu.Lock()
	k := f.signer
	f.mu.Unlock()
	tok := jwt.NewWithClaims(k.Method(), jwt.MapClaims{"iss": f.URL, "sub": subject, "aud": audience,
		"iat": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix()})
	tok.Header["kid"] = k.KID
	s, err := tok.SignedString(k.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A workload of another platform gets tokens for the client that names its (issuer, subject),
// from an issuer the administrator configured; through a key rotation at that issuer, and while
// the issuer is down, with the keys read before.
func TestAFederatedWorkloadGetsATokenThroughAKeyRotationAndAnIssuerOutage(t *testing.T) {
	ns := namespace(t)
	obj := billingClient(ns, "ci-deployer")
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false),
		Federated: []m2mv1alpha1.FederatedIdentity{{Issuer: federated.URL, Subject: "repo:acme/app:ref:refs/heads/main"}}}
	s := readyClient(t, obj)
	id := string(s.Data[m2mv1alpha1.SecretKeyClientID])
	ok := func(assertion string) func() error {
		return func() error {
			if code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, assertion, nil)); code != http.StatusOK {
				return fmt.Errorf("%d %v", code, body)
			}
			return nil
		}
	}
	testenv.Eventually(t, wait, ok(federated.token(t, "repo:acme/app:ref:refs/heads/main", issuer)))
	_, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, federated.token(t, "repo:acme/app:ref:refs/heads/main", issuer), nil))
	verifiesEverywhere(t, body["access_token"].(string), id)

	stranger := newFederatedIssuer() // serves the same paths, but no administrator trusts it
	defer stranger.Close()
	for sentence, assertion := range map[string]string{
		"another subject of the issuer":         federated.token(t, "repo:acme/app:ref:refs/heads/feature", issuer),
		"a token for another audience":          federated.token(t, "repo:acme/app:ref:refs/heads/main", "https://elsewhere.example.com"),
		"an issuer the administrator never set": stranger.token(t, "repo:acme/app:ref:refs/heads/main", issuer),
	} {
		if code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, assertion, nil)); code != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Errorf("%s: %d %v, want 401 invalid_client", sentence, code, body)
		}
	}

	// The issuer rotates its key: a token of the new key names a kid the token server has not
	// read yet, which makes it read the JWKS again (at most every 30 s).
	federated.rotate()
	testenv.Eventually(t, 2*wait, ok(federated.token(t, "repo:acme/app:ref:refs/heads/main", issuer)))

	// The issuer goes down: the keys read before still verify its tokens.
	federated.down.Store(true)
	defer federated.down.Store(false)
	if err := ok(federated.token(t, "repo:acme/app:ref:refs/heads/main", issuer))(); err != nil {
		t.Fatalf("while the issuer is down: %v", err)
	}
}

func writeJSONBody(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
