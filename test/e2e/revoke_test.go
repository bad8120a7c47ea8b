package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// After a leak, `kubectl m2m rotate --revoke-previous` refuses at once every secret the client
// had, the one in its grace period too, while pods keep asking for tokens: a pod that reads the
// Secret again gets tokens with the new secret, pods that keep an earlier one are refused from
// then on, and a token issued before stays valid until it expires.
func TestRevokePreviousRefusesEveryEarlierSecretUnderLoadAndLeavesIssuedTokensValid(t *testing.T) {
	revokeUnderLoad(t, billingClient(namespace(t), "leaked"), m2mv1alpha1.SecretKeyClientSecret, func(s *corev1.Secret) (string, error) {
		tok, err := credentialsOf(s).Token(context.Background())
		if err != nil {
			return "", err
		}
		return tok.AccessToken, nil
	})
}

// The same for a leaked private key: every earlier public key stops verifying assertions at once.
func TestRevokePreviousRefusesEveryEarlierKeyUnderLoadAndLeavesIssuedTokensValid(t *testing.T) {
	obj := billingClient(namespace(t), "leaked-key")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	revokeUnderLoad(t, obj, m2mv1alpha1.SecretKeyPrivateKey, func(s *corev1.Secret) (string, error) {
		ts, err := keyPairTokenSource(s)
		if err != nil {
			return "", err
		}
		tok, err := ts.Token()
		if err != nil {
			return "", err
		}
		return tok.AccessToken, nil
	})
}

// holder asks for tokens again and again with a credential from the Secret: the one it was given
// for good (stale), or the Secret's as it is, read again every kubeletDelay, as a pod whose
// volume the kubelet refreshes. It records what the token server answered.
type holder struct {
	mu sync.Mutex
	// credential is what it sends now.
	credential string
	// ok and refused count the answers for each credential; other holds the first answer that
	// was neither a token nor invalid_client.
	ok, refused map[string]int
	other       error
	// acceptedAfterRefusal counts tokens issued for a credential after it was once refused.
	acceptedAfterRefusal int
}

func (h *holder) record(credential string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.ok[credential]++
		if h.refused[credential] > 0 {
			h.acceptedAfterRefusal++
		}
	case invalidClient(err):
		h.refused[credential]++
	case h.other == nil:
		h.other = err
	}
}

func (h *holder) counts(credential string) (ok, refused int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok[credential], h.refused[credential]
}

// hold starts a holder of s's credential under key; with refresh it reads the Secret again
// every kubeletDelay.
func hold(s *corev1.Secret, key string, refresh bool, request func(*corev1.Secret) (string, error)) (*holder, *consumer) {
	const kubeletDelay = 2 * time.Second
	h := &holder{credential: string(s.Data[key]), ok: map[string]int{}, refused: map[string]int{}}
	mounted, refreshed := s, time.Now()
	c := startConsumer(20*time.Millisecond, func() error {
		if refresh && time.Since(refreshed) >= kubeletDelay {
			fresh := &corev1.Secret{}
			if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(s), fresh); err == nil {
				mounted, refreshed = fresh, time.Now()
				h.mu.Lock()
				h.credential = string(fresh.Data[key])
				h.mu.Unlock()
			}
		}
		_, err := request(mounted)
		h.record(string(mounted.Data[key]), err)
		return nil
	})
	return h, c
}

// revokeUnderLoad makes obj Ready with a grace period of an hour, rotates it once (so that the
// first credential is in its grace period), starts pods holding each credential, and revokes
// with the plugin. key is the Secret's data key of the credential; request gets a token with a
// Secret's credential.
func revokeUnderLoad(t *testing.T, obj *m2mv1alpha1.M2MClient, key string, request func(*corev1.Secret) (string, error)) {
	ctx := context.Background()
	kc := kubeconfigFile(t)
	ns, name := obj.Namespace, obj.Name
	common := []string{"-n", ns, "--kubeconfig", kc}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: time.Hour}
	first := readyClient(t, obj)
	if code, out, errOut := kubectlM2M(append([]string{"rotate", name}, common...)...); code != 0 {
		t.Fatalf("rotate: %d %s %s", code, out, errOut)
	}
	secret := func() *corev1.Secret {
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(first), s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	second := secret()
	// A token issued to the leaked credential before the revocation.
	var before string
	testenv.Eventually(t, wait, func() error {
		var err error
		before, err = request(second)
		return err
	})

	graced, gracedLoad := hold(first, key, false, request)
	stale, staleLoad := hold(second, key, false, request)
	mounted, mountedLoad := hold(second, key, true, request)
	loads := []*consumer{gracedLoad, staleLoad, mountedLoad}
	defer func() {
		for _, l := range loads {
			l.stop()
		}
	}()
	// Requests flow, and both earlier credentials are accepted, before the revocation.
	testenv.Eventually(t, wait, func() error {
		for _, h := range []*holder{graced, stale} {
			if ok, _ := h.counts(h.credential); ok == 0 {
				return fmt.Errorf("no token yet for a credential accepted before the revocation")
			}
		}
		return nil
	})

	code, out, errOut := kubectlM2M(append([]string{"rotate", name, "--revoke-previous"}, common...)...)
	if code != 0 {
		t.Fatalf("rotate --revoke-previous: %d %s %s", code, out, errOut)
	}
	for _, want := range []string{"2 earlier credential(s) are no longer accepted", "Secret " + first.Name, "refused until they read Secret", "Tokens already issued stay valid until they expire (at most 10m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plugin's report lacks %q:\n%s", want, out)
		}
	}
	third := secret()
	newest := string(third.Data[key])
	if newest == graced.credential || newest == stale.credential || newest == "" {
		t.Fatal("the plugin returned before the Secret carried a new credential")
	}

	// The token server refuses both earlier credentials once its cache has the new status, and
	// a pod that read the Secret again gets tokens.
	testenv.Eventually(t, wait, func() error {
		for _, s := range []*corev1.Secret{first, second} {
			if _, err := request(s); !invalidClient(err) {
				return fmt.Errorf("an earlier credential got %v, want invalid_client", err)
			}
		}
		if ok, _ := mounted.counts(newest); ok == 0 {
			return fmt.Errorf("the pod that reads the Secret has no token for the new credential yet")
		}
		return nil
	})
	for _, l := range loads {
		l.stop()
	}
	loads = nil
	for sentence, h := range map[string]*holder{"the credential in its grace period": graced, "the leaked credential": stale, "the pod that reads the Secret": mounted} {
		if h.acceptedAfterRefusal > 0 || h.other != nil {
			t.Errorf("%s: %d tokens issued to a credential after it was refused; other error: %v", sentence, h.acceptedAfterRefusal, h.other)
		}
	}
	for sentence, h := range map[string]*holder{"the credential in its grace period": graced, "the leaked credential": stale} {
		if _, refused := h.counts(h.credential); refused == 0 {
			t.Errorf("%s: no request was refused after the revocation", sentence)
		}
	}
	if _, refused := mounted.counts(newest); refused > 0 {
		t.Errorf("the new credential was refused %d times", refused)
	}

	// Tokens issued before stay valid, to local verifiers and to introspection: the revocation
	// does nothing about them yet.
	verifiesEverywhere(t, before, obj.Status.ClientID)
	dir := t.TempDir()
	writeVolume(t, dir, readyClient(t, billingClient(ns, name+"-service")))
	in, err := m2mauth.NewIntrospector(dir, m2mauth.IntrospectionAudiences("https://payments.example.com"), m2mauth.IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := in.Introspect(ctx, before); err != nil || !info.Active {
		t.Fatalf("introspection of a token issued before the revocation: %+v, %v", info, err)
	}

	code, out, _ = kubectlM2M(append([]string{"describe", name}, common...)...)
	_, listed, _ := strings.Cut(out, "CREDENTIAL")
	listed, _, _ = strings.Cut(listed, "Conditions:")
	if code != 0 || strings.Count(strings.TrimSpace(listed), "\n") != 1 || !strings.Contains(listed, "never (current)") || !strings.Contains(out, "Last revocation:") {
		t.Fatalf("describe does not list the new credential alone: %d\n%s", code, out)
	}
	current := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
		t.Fatal(err)
	}
	if n := len(current.Status.AcceptedSecrets); n != 1 || current.Status.RevocationPending || current.Status.LastRevocationTime == nil {
		t.Fatalf("status after the revocation: %d entries, pending %v, lastRevocationTime %v", n, current.Status.RevocationPending, current.Status.LastRevocationTime)
	}
	if n, err := testenv.CountEvents(ctx, env.Client, ns, "M2MClient", name, m2mv1alpha1.EventRevoked); err != nil || n != 1 {
		t.Fatalf("%d Revoked events (%v), want 1", n, err)
	}
}

// A tenant with the usual rights in its own namespace revokes its own client with the plugin,
// and cannot revoke another namespace's, neither with the plugin nor by setting revokeTrigger:
// that client keeps its secret.
func TestATenantRevokesItsOwnClientAndCannotRevokeAnotherNamespaces(t *testing.T) {
	ctx := context.Background()
	kc := kubeconfigFile(t)
	victimNS, tenantNS := namespace(t), namespace(t)
	victim := billingClient(victimNS, "victim")
	s := readyClient(t, victim)
	tenant := testenv.Tenant(t, env, tenantNS, testenv.GrantClients)
	as := []string{"--kubeconfig", kc, "--as", "tenant:" + tenantNS + ":" + string(testenv.GrantClients), "--as-group", "system:authenticated"}

	code, out, errOut := kubectlM2M(append([]string{"rotate", "victim", "--revoke-previous", "-n", victimNS, "--timeout", "5s"}, as...)...)
	if code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Fatalf("revoking another namespace's client: %d %q %q, want 1 and forbidden", code, out, errOut)
	}
	base := victim.DeepCopy()
	victim.Spec.Rotation.RevokeTrigger = "taken-over"
	if err := tenant.Patch(ctx, victim, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Fatalf("setting another namespace's revokeTrigger: %v, want Forbidden", err)
	}

	own := billingClient(tenantNS, "own")
	if err := tenant.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), own); err != nil || len(own.Status.AcceptedSecrets) == 0 {
			return fmt.Errorf("the tenant's client has no credential yet (%v)", err)
		}
		return nil
	})
	if code, out, errOut := kubectlM2M(append([]string{"rotate", "own", "--revoke-previous", "-n", tenantNS}, as...)...); code != 0 || !strings.Contains(out, "1 earlier credential(s)") {
		t.Fatalf("the tenant revoking its own client: %d %s %s", code, out, errOut)
	}

	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(victim), victim); err != nil {
		t.Fatal(err)
	}
	if victim.Annotations[m2mv1alpha1.RevokePreviousAnnotation] != "" || victim.Spec.Rotation.RevokeTrigger != "" || victim.Status.LastRevocationTime != nil {
		t.Fatalf("the victim was asked to revoke: %v %q", victim.Annotations, victim.Spec.Rotation.RevokeTrigger)
	}
	if _, err := credentialsOf(s).Token(ctx); err != nil {
		t.Fatalf("the victim's secret: %v", err)
	}
}
