package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// ownerToken is the bearer token of a ServiceAccount of ns that may get the M2MClients and
// Secrets of ns and nothing else: the owner of the clients there, as a tenant.
func ownerToken(t *testing.T, ns string) string {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-owner"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{m2mv1alpha1.GroupVersion.Group}, Resources: []string{"m2mclients"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
	}}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-owner"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "owner"}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	return serviceAccountToken(t, ns, "owner")
}

// tokenLoad asks for tokens of s's client from workers goroutines until stop, and returns how
// many it got and how many were refused.
func tokenLoad(t *testing.T, id, secret string, workers int) (stop func() (ok, refused int64)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var got, refused atomic.Int64
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := testenv.ClientCredentials(ctx, http.DefaultClient, issuer, id, secret)
				switch {
				case err == nil && resp.AccessToken != "":
					got.Add(1)
				case ctx.Err() == nil:
					refused.Add(1)
				}
			}
		})
	}
	return func() (int64, int64) {
		cancel()
		wg.Wait()
		return got.Load(), refused.Load()
	}
}

// askRefusals asks the token server for the refusals of ns/name with bearer (none when empty).
func askRefusals(t *testing.T, bearer, ns, name string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, issuer+tokenserver.RefusalsPath+"?"+url.Values{"namespace": {ns}, "name": {name}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The owner of a client, with rights in its own namespace only, runs `kubectl m2m why` while
// other clients get tokens, and sees that its pods sent a wrong secret and what to do. It sees
// nothing of another namespace's client (403, the same as for a client that does not exist),
// and no one without a Kubernetes token sees anything (401). The token server checks the
// caller with the RBAC of config/rbac, and the load gets every token meanwhile.
func TestTheOwnerOfAClientSeesWhyItWasRefusedAndNothingOfAnotherNamespace(t *testing.T) {
	mine, theirs, busy := namespace(t), namespace(t), namespace(t)
	readyClient(t, billingClient(mine, "reports"))
	other := readyClient(t, billingClient(theirs, "payroll"))
	load := readyClient(t, billingClient(busy, "busy"))
	stop := tokenLoad(t, string(load.Data[m2mv1alpha1.SecretKeyClientID]), string(load.Data[m2mv1alpha1.SecretKeyClientSecret]), 4)
	defer stop()

	var reports m2mv1alpha1.M2MClient
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: mine, Name: "reports"}, &reports); err != nil {
		t.Fatal(err)
	}
	const stale = "a-secret-rotated-away-long-ago-0123456789abcdef"
	for _, id := range []string{reports.Status.ClientID, string(other.Data[m2mv1alpha1.SecretKeyClientID])} {
		for range 3 {
			if resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, issuer, id, stale); err == nil && resp.AccessToken != "" {
				t.Fatal("a stale secret got a token")
			}
		}
	}

	token := ownerToken(t, mine)
	kc := testenv.TokenKubeconfig(t, env, token)
	code, out, errOut := kubectlM2M("why", "reports", "-n", mine, "--kubeconfig", kc)
	if code != 0 || !strings.Contains(out, "wrong_secret") || !strings.Contains(out, "refused M2MClient "+mine+"/reports 3 times") ||
		!strings.Contains(out, "What to do:") || !strings.Contains(out, "Each replica remembers only the requests it refused") {
		t.Fatalf("kubectl m2m why: %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, stale) || strings.Contains(out, token) {
		t.Fatalf("kubectl m2m why printed a secret or a token:\n%s", out)
	}

	// Another namespace's client, past the API server (whose RBAC refuses the owner the
	// M2MClient) straight to the token server: 403, and the same for a client that does not exist.
	code, out, errOut = kubectlM2M("why", "payroll", "-n", theirs, "--kubeconfig", kc, "--token-url", issuer+"/oauth2/token")
	if code != 1 || !strings.Contains(errOut, "you may not get m2mclients payroll in namespace "+theirs) {
		t.Fatalf("kubectl m2m why of another namespace's client: %d\n%s%s", code, out, errOut)
	}
	status, body := askRefusals(t, token, theirs, "payroll")
	statusNone, bodyNone := askRefusals(t, token, theirs, "no-such-client")
	if status != http.StatusForbidden || strings.Contains(body, "wrong_secret") || statusNone != status ||
		strings.ReplaceAll(bodyNone, "no-such-client", "payroll") != body {
		t.Fatalf("another namespace's client: %d %s; a client that does not exist: %d %s", status, body, statusNone, bodyNone)
	}
	for sentence, bearer := range map[string]string{"no token": "", "a made-up token": "made-up"} {
		if status, body := askRefusals(t, bearer, mine, "reports"); status != http.StatusUnauthorized || strings.Contains(body, "wrong_secret") {
			t.Fatalf("%s: %d %s", sentence, status, body)
		}
	}

	if ok, refused := stop(); ok == 0 || refused != 0 {
		t.Fatalf("the token load got %d tokens and %d refusals meanwhile", ok, refused)
	}
}

// A kubeconfig that authenticates with a client certificate, as envtest's users and many
// admins' do, gets an error that says which identities work, and the alternative.
func TestKubectlM2MWhyWithAClientCertificateSaysWhatToUseInstead(t *testing.T) {
	ns := namespace(t)
	readyClient(t, billingClient(ns, "cert-user"))
	code, _, errOut := kubectlM2M("why", "cert-user", "-n", ns, "--kubeconfig", kubeconfigFile(t))
	if code != 1 || !strings.Contains(errOut, "client certificate") || !strings.Contains(errOut, "kubectl create token") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
