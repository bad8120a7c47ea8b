package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// tokenWith gets a token for s's client with credential sent as the credential of key (a
// client_secret, or a private_key that signs the assertion), as a holder outside the cluster
// that was handed it does.
func tokenWith(s *corev1.Secret, key, credential string) error {
	c := s.DeepCopy()
	c.Data[key] = []byte(credential)
	if key == m2mv1alpha1.SecretKeyPrivateKey {
		ts, err := keyPairTokenSource(c)
		if err != nil {
			return err
		}
		_, err = ts.Token()
		return err
	}
	_, err := credentialsOf(c).Token(context.Background())
	return err
}

// holderRotation plays a SaaS backend that rotates a credential it handed to a customer: it
// starts a rotation (with the plugin), the customer gets tokens with the old credential and then
// with the next one, read from the Secret's next_ key (both accepted, while pods reading key
// still see the old one), and the backend ends the rotation with end (--complete or --cancel).
// It returns the old and the next credential and the Secret as the rotation left it.
func holderRotation(t *testing.T, obj *m2mv1alpha1.M2MClient, key, end string) (old, next string, after *corev1.Secret) {
	ctx := context.Background()
	kc := kubeconfigFile(t)
	common := []string{"-n", obj.Namespace, "--kubeconfig", kc}
	s := readyClient(t, obj)
	old = string(s.Data[key])
	if err := tokenWith(s, key, old); err != nil {
		t.Fatalf("a token with the first credential: %v", err)
	}
	if code, out, errOut := kubectlM2M(append([]string{"rotate", obj.Name, "--start"}, common...)...); code != 0 || !strings.Contains(out, "started") {
		t.Fatalf("rotate --start: %d %s %s", code, out, errOut)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
		t.Fatal(err)
	}
	next = string(s.Data[m2mv1alpha1.NextSecretKeyPrefix+key])
	if next == "" || next == old || string(s.Data[key]) != old {
		t.Fatalf("after --start the Secret's %s must stay the current credential and its next_%s hold a new one (next empty: %v, next is old: %v, current changed: %v)", key, key, next == "", next == old, string(s.Data[key]) != old)
	}
	// The manager accepts the next credential before it writes the Secret, so both work now.
	for what, credential := range map[string]string{"old": old, "next": next} {
		if err := tokenWith(s, key, credential); err != nil {
			t.Fatalf("while the rotation is started, a token with the %s credential: %v", what, err)
		}
	}
	if code, out, errOut := kubectlM2M(append([]string{"rotate", obj.Name, end}, common...)...); code != 0 {
		t.Fatalf("rotate %s: %d %s %s", end, code, out, errOut)
	}
	after = &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), after); err != nil {
		t.Fatal(err)
	}
	return old, next, after
}

// refusedEventually waits until the token server, whose cache follows status, refuses credential.
func refusedEventually(t *testing.T, s *corev1.Secret, key, credential string) {
	testenv.Eventually(t, wait, func() error {
		if err := tokenWith(s, key, credential); !invalidClient(err) {
			return fmt.Errorf("a token with the replaced credential: %v, want invalid_client", err)
		}
		return nil
	})
}

// A SaaS backend starts a rotation of the secret it handed to a customer: both secrets work
// while the customer switches, and once the backend completes it the Secret carries the new one
// and the old one is refused.
func TestARotationTheHolderCompletesAcceptsBothSecretsAndThenOnlyTheNewOne(t *testing.T) {
	holderCompletes(t, billingClient(namespace(t), "customer-1"), m2mv1alpha1.SecretKeyClientSecret)
}

// The same for a generated key pair: the customer gets a new private key.
func TestARotationTheHolderCompletesAcceptsBothKeysAndThenOnlyTheNewOne(t *testing.T) {
	obj := billingClient(namespace(t), "customer-key")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	holderCompletes(t, obj, m2mv1alpha1.SecretKeyPrivateKey)
}

func holderCompletes(t *testing.T, obj *m2mv1alpha1.M2MClient, key string) {
	old, next, s := holderRotation(t, obj, key, "--complete")
	if string(s.Data[key]) != next || len(s.Data[m2mv1alpha1.NextSecretKeyPrefix+key]) != 0 {
		t.Fatalf("after --complete the Secret's %s must be the next credential and next_%s gone", key, key)
	}
	refusedEventually(t, s, key, old)
	if err := tokenWith(s, key, next); err != nil {
		t.Fatalf("after --complete, a token with the new credential: %v", err)
	}
}

// A cancelled rotation leaves the old secret working and refuses the one it had issued.
func TestACancelledRotationKeepsTheOldSecretAndRefusesTheNextOne(t *testing.T) {
	old, next, s := holderRotation(t, billingClient(namespace(t), "customer-2"), m2mv1alpha1.SecretKeyClientSecret, "--cancel")
	key := m2mv1alpha1.SecretKeyClientSecret
	refusedEventually(t, s, key, next)
	if string(s.Data[key]) != old {
		t.Fatal("after --cancel the Secret's client_secret must still be the old one")
	}
	if err := tokenWith(s, key, old); err != nil {
		t.Fatalf("after --cancel, a token with the old secret: %v", err)
	}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		if len(s.Data["next_"+key]) != 0 {
			return fmt.Errorf("the Secret still holds the discarded next_%s", key)
		}
		return nil
	})
}

// A tenant with rights in its own namespace only can neither complete nor cancel another
// namespace's rotation, with the plugin or by writing spec.rotation.holder: both of that
// client's secrets stay accepted.
func TestATenantCannotCompleteOrCancelAnotherNamespacesRotation(t *testing.T) {
	ctx := context.Background()
	kc := kubeconfigFile(t)
	victimNS, tenantNS := namespace(t), namespace(t)
	victim := billingClient(victimNS, "victim")
	s := readyClient(t, victim)
	if code, out, errOut := kubectlM2M("rotate", "victim", "--start", "-n", victimNS, "--kubeconfig", kc); code != 0 {
		t.Fatalf("rotate --start: %d %s %s", code, out, errOut)
	}
	tenant := testenv.Tenant(t, env, tenantNS, testenv.GrantClients)
	as := []string{"--kubeconfig", kc, "--as", "tenant:" + tenantNS + ":" + string(testenv.GrantClients), "--as-group", "system:authenticated"}
	for _, end := range []string{"--complete", "--cancel"} {
		code, out, errOut := kubectlM2M(append([]string{"rotate", "victim", end, "-n", victimNS, "--timeout", "5s"}, as...)...)
		if code != 1 || !strings.Contains(errOut, "forbidden") {
			t.Fatalf("rotate %s on another namespace's client: %d %q %q, want 1 and forbidden", end, code, out, errOut)
		}
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(victim), victim); err != nil {
		t.Fatal(err)
	}
	base := victim.DeepCopy()
	victim.Spec.Rotation.Holder = &m2mv1alpha1.HolderRotation{ID: base.Spec.Rotation.Holder.ID, State: m2mv1alpha1.HolderRotationCompleted}
	if err := tenant.Patch(ctx, victim, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Fatalf("completing another namespace's rotation: %v, want Forbidden", err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
		t.Fatal(err)
	}
	for what, credential := range map[string]string{"current": string(s.Data["client_secret"]), "next": string(s.Data["next_client_secret"])} {
		if err := tokenWith(s, "client_secret", credential); err != nil {
			t.Fatalf("the victim's %s secret: %v", what, err)
		}
	}
}

// Someone who may write status (the admission policy that reserves it to the manager is not
// installed here) cannot complete a started rotation by itself: completing needs the spec, and
// the secret it moves comes from the Secret. Marking it Completed in status makes the manager read
// the two accepted secrets as an interrupted plain rotation, which rotates with a grace period:
// the holder's secret stays accepted, and the next one never becomes the client's.
func TestAStatusWriterCannotCompleteARotation(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	obj := billingClient(ns, "forged")
	s := readyClient(t, obj)
	kc := kubeconfigFile(t)
	if code, out, errOut := kubectlM2M("rotate", "forged", "--start", "-n", ns, "--kubeconfig", kc); code != 0 {
		t.Fatalf("rotate --start: %d %s %s", code, out, errOut)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
		t.Fatal(err)
	}
	old, next := string(s.Data["client_secret"]), string(s.Data["next_client_secret"])
	writer := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	obj.Status.HolderRotation.State = m2mv1alpha1.HolderRotationCompleted
	if err := writer.Status().Update(ctx, obj); err != nil {
		t.Fatalf("the status writer's update: %v", err)
	}
	// The manager has acted once the Secret carries another secret than the holder's.
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		if string(s.Data["client_secret"]) == old {
			return fmt.Errorf("the manager has not acted on the forged status yet")
		}
		return nil
	})
	if string(s.Data["client_secret"]) == next {
		t.Fatal("the forged status made the next secret the client's: a status writer completed the rotation")
	}
	if err := tokenWith(s, "client_secret", old); err != nil {
		t.Fatalf("the holder's secret was refused after a status writer marked the rotation completed: %v", err)
	}
}
