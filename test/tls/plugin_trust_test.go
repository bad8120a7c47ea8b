package tls

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/plugin"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A tenant with the usual edit rights points its client's Secret at a TLS server of its own, with
// its CA and an issuer whose keys it holds, and makes the Secret immutable so that the manager
// cannot restore it (the client shows SecretWriteFailed, which is what makes an administrator
// look). The administrator's kubectl m2m why reaches the install's token server, and verify,
// without --issuer, accepts the install's token and refuses the tenant's: the tenant's server
// receives no request at all, least of all one with the administrator's Kubernetes token.
func TestAnAdministratorsWhyAndVerifyNeverTrustAClientsSecretThatItsTenantRedirected(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	const aud = "https://billing.example.com"
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reports"},
		Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}, Audiences: []m2mv1alpha1.Audience{aud}}}
	testenv.CreateReady(t, env.Client, obj, wait)
	adminToken := clusterAdminToken(t)
	admin := testenv.TokenKubeconfig(t, env, adminToken)
	genuine := runPlugin(t, 0, "token", "reports", "-n", ns, "--kubeconfig", admin)

	evil := newTenantIssuer(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantSecrets)
	s := &corev1.Secret{}
	if err := tenant.Get(ctx, types.NamespacedName{Namespace: ns, Name: obj.Status.SecretName}, s); err != nil {
		t.Fatal(err)
	}
	s.Data[m2mv1alpha1.SecretKeyTokenURL] = []byte(evil.URL + "/oauth2/token")
	s.Data[m2mv1alpha1.SecretKeyIssuer] = []byte(evil.URL)
	s.Data[m2mv1alpha1.SecretKeyCA] = evil.ca
	s.Immutable = ptr.To(true)
	if err := tenant.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	// The manager writes a Secret of the install's again once this one is gone: the other tests
	// expect every credentials Secret to follow the CA bundle.
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), s) })
	testenv.Poke(t, env.Client, obj)
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady); c == nil || c.Reason != m2mv1alpha1.ReasonSecretWriteFailed {
			return fmt.Errorf("Ready is %+v, want SecretWriteFailed", c)
		}
		return nil
	})

	out := runPlugin(t, 0, "why", "reports", "-n", ns, "--kubeconfig", admin)
	if !strings.Contains(out, "No refusals of M2MClient "+ns+"/reports remembered by token server replica") {
		t.Fatalf("why did not get the install's token server's answer:\n%s", out)
	}
	if claims := runPlugin(t, 0, "verify", genuine, "--audience", aud, "--kubeconfig", admin); !strings.Contains(claims, `"iss": "`+issuer+`"`) {
		t.Fatalf("verify of the install's token:\n%s", claims)
	}
	forged := evil.token(t, obj.Status.ClientID, aud)
	runPlugin(t, 1, "verify", forged, "--audience", aud, "--kubeconfig", admin)
	if got := evil.received(); len(got) != 0 {
		t.Fatalf("the tenant's server received %d requests: %v", len(got), got)
	}
}

// runPlugin runs kubectl m2m with args, requires exit code want, and returns stdout.
func runPlugin(t *testing.T, want int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := plugin.Run(context.Background(), args, &out, &errOut); code != want {
		t.Fatalf("kubectl m2m %s: exit %d, want %d\n%s%s", args[0], code, want, out.String(), errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// clusterAdminToken is the bearer token of a ServiceAccount bound to cluster-admin: the
// administrator whose token the tenant is after.
func clusterAdminToken(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin"}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "admin-" + ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}}}
	for _, o := range []client.Object{sa, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), binding) })
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if err := env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// tenantIssuer is a TLS server of the tenant's, posing as a token server and an issuer whose
// signing key the tenant holds. It records every request it receives.
type tenantIssuer struct {
	*httptest.Server
	ca  []byte
	key *signingkeys.Key

	mu   sync.Mutex
	seen []string
}

func newTenantIssuer(t *testing.T) *tenantIssuer {
	t.Helper()
	k, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &tenantIssuer{key: k}
	e.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The path, and whether it carried credentials: never the credentials, which the
		// test's failure message would print.
		e.mu.Lock()
		e.seen = append(e.seen, fmt.Sprintf("%s (Authorization header: %t)", r.URL.Path, r.Header.Get("Authorization") != ""))
		e.mu.Unlock()
		var body any
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			body = map[string]string{"issuer": e.URL, "jwks_uri": e.URL + "/keys"}
		case "/keys":
			body = jwk.Set{Keys: []jwk.Key{k.PublicJWK()}}
		default: // /refusals, as a token server answers it, with the tenant's advice
			body = map[string]any{"replica": "tenant", "total": 1, "refusals": []any{map[string]string{"reason": "wrong_secret", "help": "Run the tenant's fix."}}}
		}
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(e.Close)
	e.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Certificate().Raw})
	return e
}

// token is an access token as the install's token server would issue to clientID, but signed
// with the tenant's key and naming the tenant's issuer.
func (e *tenantIssuer) token(t *testing.T, clientID, aud string) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(e.key.Method(), jwt.MapClaims{"iss": e.URL, "sub": clientID, "client_id": clientID, "aud": aud,
		"scope": "read:invoices", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "forged"})
	tok.Header["kid"], tok.Header["typ"] = e.key.KID, "at+jwt"
	s, err := tok.SignedString(e.key.SigningKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// received is what the server was asked: the paths, and whether they carried an Authorization
// header.
func (e *tenantIssuer) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.seen)
}
