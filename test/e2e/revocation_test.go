package e2e

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kwait "k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// paymentsVerifier is a resource server's verifier of iss, built from its metadata with the
// library's defaults: revocation checking on.
func paymentsVerifier(t *testing.T, iss string) *m2mauth.Verifier {
	t.Helper()
	v, err := m2mauth.NewVerifier(context.Background(), iss, m2mauth.WithAudiences("https://payments.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if !v.RevocationStatus().Enabled {
		t.Fatal("a verifier built from the metadata does not check revocation")
	}
	return v
}

// eventually waits, with a generous timeout, until v's answer for tok satisfies ok.
func eventually(t *testing.T, what string, v *m2mauth.Verifier, tok string, ok func(error) bool) {
	t.Helper()
	var last error
	err := kwait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, wait, true, func(ctx context.Context) (bool, error) {
		_, last = v.Authenticate(ctx, tok)
		return ok(last), nil
	})
	if err != nil {
		t.Fatalf("%s: the verifier still answers %v", what, last)
	}
}

func revoked(err error) bool { return errors.Is(err, m2mauth.ErrRevoked) }

// binding returns the ClientIDBinding of id once cond holds for it.
func bindingWhen(t *testing.T, id string, cond func(*m2mv1alpha1.ClientIDBinding) bool) *m2mv1alpha1.ClientIDBinding {
	t.Helper()
	b := &m2mv1alpha1.ClientIDBinding{}
	err := kwait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, wait, true, func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: m2mv1alpha1.ClientIDBindingName(id)}, b); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond(b), nil
	})
	if err != nil {
		t.Fatalf("binding of %s: %v (status %+v)", id, err, b.Status)
	}
	return b
}

// newTokenAfter gets a token from cfg once the token server issues one again and the second of
// not has passed, retrying while the client is still refused.
func newTokenAfter(t *testing.T, cfg *clientcredentials.Config, not time.Time) string {
	t.Helper()
	var tok string
	var last error
	err := kwait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, wait, true, func(ctx context.Context) (bool, error) {
		if time.Now().Before(not) {
			return false, nil
		}
		got, err := cfg.Token(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		tok = got.AccessToken
		return true, nil
	})
	if err != nil {
		t.Fatalf("no new token: %v", last)
	}
	return tok
}

func TestARunningVerifierRefusesADisabledClientsEarlierTokensAlsoAfterTheClientIsEnabledAgain(t *testing.T) {
	ctx := context.Background()
	obj := billingClient(namespace(t), "disabled-later")
	cfg := credentialsOf(readyClient(t, obj))
	earlier, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := paymentsVerifier(t, issuer)
	if _, err := v.Authenticate(ctx, earlier.AccessToken); err != nil {
		t.Fatal(err)
	}

	patchClient(t, obj, func(c *m2mv1alpha1.M2MClient) { c.Spec.Disabled = true })
	eventually(t, "after disabled: true", v, earlier.AccessToken, revoked)
	b := bindingWhen(t, obj.Status.ClientID, func(b *m2mv1alpha1.ClientIDBinding) bool {
		return b.Status.DisabledSince != nil && b.Status.TokensRevokedBefore != nil
	})

	patchClient(t, obj, func(c *m2mv1alpha1.M2MClient) { c.Spec.Disabled = false })
	later := newTokenAfter(t, cfg, b.Status.TokensRevokedBefore.Time)
	eventually(t, "a token issued after the client was enabled again", v, later, func(err error) bool { return err == nil })
	if _, err := v.Authenticate(ctx, earlier.AccessToken); !revoked(err) {
		t.Fatalf("after the client is enabled again, its token from before the disable: %v, want ErrRevoked", err)
	}
}

func TestARunningVerifierRefusesTheTokensIssuedBeforeKubectlM2MRevokeAndAcceptsLaterOnes(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "revoke-tokens")
	cfg := credentialsOf(readyClient(t, obj))
	earlier, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := paymentsVerifier(t, issuer)

	if code, out, errOut := kubectlM2M("revoke", obj.Name, "-n", ns, "--kubeconfig", kubeconfigFile(t)); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("kubectl m2m revoke: %d %q %q", code, out, errOut)
	}
	eventually(t, "after kubectl m2m revoke", v, earlier.AccessToken, revoked)

	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	later := newTokenAfter(t, cfg, obj.Spec.RevokeTokensIssuedBefore.Time)
	eventually(t, "a token issued after the revocation", v, later, func(err error) bool { return err == nil })
}

// A deleted client's earlier tokens stay refused by a token server that starts after the
// deletion, which knows of it only from the manager's record on the binding.
func TestADeletedClientsEarlierTokensStayRefusedAfterTheTokenServerRestarts(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	own := "http://" + ln.Addr().String()
	stop := startTokenServer(t, ln, own, ns)

	obj := billingClient(ns, "deleted-later")
	cfg := credentialsOf(readyClient(t, obj))
	cfg.TokenURL = own + "/oauth2/token"
	earlier, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := paymentsVerifier(t, own)
	if _, err := v.Authenticate(ctx, earlier.AccessToken); err != nil {
		t.Fatal(err)
	}

	if err := env.Client.Delete(ctx, obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, "after the client was deleted", v, earlier.AccessToken, revoked)
	bindingWhen(t, obj.Status.ClientID, func(b *m2mv1alpha1.ClientIDBinding) bool { return b.Status.DeletedAt != nil })

	stop()
	if ln, err = net.Listen("tcp", strings.TrimPrefix(own, "http://")); err != nil {
		t.Fatal(err)
	}
	startTokenServer(t, ln, own, ns)
	if _, err := paymentsVerifier(t, own).Authenticate(ctx, earlier.AccessToken); !revoked(err) {
		t.Fatalf("a verifier of the restarted token server: %v, want ErrRevoked", err)
	}
}

// startTokenServer runs a token server of issuer iss on ln under its own RBAC, and returns a func
// that stops it (also run at cleanup).
func startTokenServer(t *testing.T, ln net.Listener, iss, ns string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tokenserver.Run(ctx, tokenServerConfig, tokenserver.Options{
			IssuerURL: iss, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret, WatchNamespaces: []string{ns},
		})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("token server: %v", err)
		}
	}
	t.Cleanup(stop)
	if err := testenv.WaitOK(iss+"/readyz", wait); err != nil {
		t.Fatal(err)
	}
	return stop
}

func patchClient(t *testing.T, obj *m2mv1alpha1.M2MClient, change func(*m2mv1alpha1.M2MClient)) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(obj.DeepCopy())
	change(obj)
	if err := env.Client.Patch(ctx, obj, patch); err != nil {
		t.Fatal(err)
	}
}

// The record of a revocation on a binding is written by the manager alone: a tenant, even with
// every right on its M2MClients and their status, can neither erase nor forge it, the token
// server (which writes nothing) cannot either, and no one can move it back.
func TestNeitherATenantNorTheTokenServerCanEraseOrForgeTheRevocationRecordOfABinding(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "recorded")
	readyClient(t, obj)
	patchClient(t, obj, func(c *m2mv1alpha1.M2MClient) { c.Spec.Disabled = true })
	b := bindingWhen(t, obj.Status.ClientID, func(b *m2mv1alpha1.ClientIDBinding) bool { return b.Status.TokensRevokedBefore != nil })

	tokenServer, err := client.New(tokenServerConfig, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]client.Client{"a tenant": testenv.Tenant(t, env, ns, testenv.GrantStatus), "the token server": tokenServer} {
		erased := b.DeepCopy()
		erased.Status = m2mv1alpha1.ClientIDBindingStatus{}
		if err := c.Status().Update(ctx, erased); !apierrors.IsForbidden(err) {
			t.Errorf("%s erasing the record: %v, want Forbidden", name, err)
		}
		if err := c.Delete(ctx, b.DeepCopy()); !apierrors.IsForbidden(err) {
			t.Errorf("%s deleting the binding: %v, want Forbidden", name, err)
		}
		forged := &m2mv1alpha1.ClientIDBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "forged-" + strings.ToLower(strings.ReplaceAll(name, " ", "-"))},
			Spec:       m2mv1alpha1.ClientIDBindingSpec{ClientID: "forged", Namespace: ns, Name: "victim"},
		}
		if err := c.Create(ctx, forged); !apierrors.IsForbidden(err) {
			t.Errorf("%s creating a binding: %v, want Forbidden", name, err)
		}
	}

	back := b.DeepCopy()
	earlier := metav1.NewTime(b.Status.TokensRevokedBefore.Add(-time.Hour))
	back.Status.TokensRevokedBefore = &earlier
	if err := env.Client.Status().Update(ctx, back); !apierrors.IsInvalid(err) {
		t.Fatalf("an administrator moving tokensRevokedBefore back: %v, want Invalid", err)
	}
}
