// Package upgrade starts from objects written as the version before status MACs and client ID
// bindings wrote them, upgrades the token server and then the manager under token load, and
// checks that no pod holding its current secret, or a secret in its grace period, was refused.
// It also moves an install to a public issuer, as docs/operations.md says, under the same kind
// of load (public_issuer_test.go).
package upgrade

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const wait = 60 * time.Second

// legacyClient is one client as the previous version left it.
type legacyClient struct {
	ns, name, id, current, grace string
}

// writeLegacy creates a client, its Secret and its status as the previous version wrote them:
// no MACs, no binding. extra entries are appended to its status.
func writeLegacy(t *testing.T, c client.Client, l legacyClient, extra ...m2mv1alpha1.AcceptedSecret) {
	t.Helper()
	ctx := context.Background()
	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: l.name},
		Spec:       m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:things"}},
	}
	if err := c.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	graceEnds := metav1.NewTime(now.Add(30 * time.Minute))
	obj.Status = m2mv1alpha1.M2MClientStatus{
		ClientID:   l.id,
		SecretName: l.name + "-credentials",
		State:      m2mv1alpha1.ClientStateActive,
		AcceptedSecrets: append([]m2mv1alpha1.AcceptedSecret{
			{Hash: credentials.Hash(l.grace), LastFour: credentials.LastFour(l.grace), CreatedAt: now, ExpiresAt: &graceEnds},
			{Hash: credentials.Hash(l.current), LastFour: credentials.LastFour(l.current), CreatedAt: now},
		}, extra...),
		LastRotationTime:   &now,
		ObservedGeneration: 1,
		Conditions: []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: m2mv1alpha1.ReasonCredentialsReady,
			Message: "ok", LastTransitionTime: now, ObservedGeneration: 1}},
	}
	if err := c.Status().Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: l.name + "-credentials",
			Labels:          map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue, m2mv1alpha1.ClientLabel: l.name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClient", Name: l.name, UID: obj.UID, Controller: ptr.To(true)}}},
		Data: map[string][]byte{m2mv1alpha1.SecretKeyClientID: []byte(l.id), m2mv1alpha1.SecretKeyClientSecret: []byte(l.current)},
	}
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
}

func TestUpgradingUnderLoadRefusesNoCurrentOrGraceSecretAndThenEnforcesMACs(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	for _, ns := range []string{"m2m-system", "team-a", "team-b"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	// The signing-key Secret of the previous version: signing keys, no status keys.
	keys, err := signingkeys.Apply(&signingkeys.Set{}, signingkeys.Plan(&signingkeys.Set{}, signingkeys.DefaultPolicy, keyring.AskNone, time.Now()), signingkeys.DefaultPolicy, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := keys.Encode()
	if err := env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: signingkeys.DefaultSecret.Namespace, Name: signingkeys.DefaultSecret.Name,
			Labels: map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}},
		Data: map[string][]byte{signingkeys.DataKey: data},
	}); err != nil {
		t.Fatal(err)
	}

	var clients []legacyClient
	for i := range 20 {
		ns := []string{"team-a", "team-b"}[i%2]
		clients = append(clients, legacyClient{ns: ns, name: fmt.Sprintf("c%d", i), id: fmt.Sprintf("m2m-legacy-%d", i),
			current: fmt.Sprintf("current-secret-%02d-Xq7vN2xKp9LmR4sW8yZb3cFh", i), grace: fmt.Sprintf("grace-secret-%02d-Tq7vN2xKp9LmR4sW8yZb3cFh", i)})
	}
	// A hash forged into status before the upgrade, accepted until 9999 by the previous version.
	forged := "forged-before-the-upgrade-Xq7vN2xKp9LmR4sW8yZb3"
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	for i, l := range clients {
		var extra []m2mv1alpha1.AcceptedSecret
		if i == 0 {
			extra = append(extra, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(forged), CreatedAt: metav1.Now(), ExpiresAt: &forever})
		}
		writeLegacy(t, env.Client, l, extra...)
	}
	// A client that waits in DuplicateClientID for client 1's ID, as the previous version left it.
	waiter := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "waiter"}, Spec: m2mv1alpha1.M2MClientSpec{ClientID: clients[1].id}}
	if err := env.Client.Create(ctx, waiter); err != nil {
		t.Fatal(err)
	}
	waiter.Status.Conditions = []metav1.Condition{{Type: m2mv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: m2mv1alpha1.ReasonDuplicateClientID, Message: "taken", LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(ctx, waiter); err != nil {
		t.Fatal(err)
	}

	// Step 1: the new token server, while the previous manager (none here) still runs.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	tsCtx, stopTS := context.WithCancel(ctx)
	tsDone := make(chan error, 1)
	go func() {
		// Without an IssuanceLimit, off: every client asks without pause, far above the default
		// of 600 a minute, and what is measured is the upgrade.
		tsDone <- tokenserver.Run(tsCtx, env.Config, tokenserver.Options{IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret})
	}()
	t.Cleanup(func() { stopTS(); <-tsDone })
	if err := testenv.WaitOK(issuer+"/readyz", wait); err != nil {
		t.Fatal(err)
	}

	// Token load: every client asks with its current secret and with its grace secret, all the
	// time, from before the manager's upgrade until after enforcement.
	var requests, refused atomic.Int64
	var firstRefusal atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, l := range clients {
		for _, secret := range []string{l.current, l.grace} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for loadCtx.Err() == nil {
					resp, err := testenv.ClientCredentials(loadCtx, http.DefaultClient, issuer, l.id, secret)
					if loadCtx.Err() != nil {
						return
					}
					requests.Add(1)
					if err != nil || resp.Status != http.StatusOK {
						refused.Add(1)
						firstRefusal.CompareAndSwap(nil, fmt.Sprintf("%s/%s: %v %d %s", l.ns, l.name, err, resp.Status, resp.Raw))
					}
				}
			}()
		}
	}
	t.Cleanup(func() { stopLoad(); wg.Wait() })

	// The previous version's forged entry works against the new token server until enforcement:
	// that is the previous version's behaviour, kept so that nothing legitimate is refused.
	if resp, _ := testenv.ClientCredentials(ctx, http.DefaultClient, issuer, clients[0].id, forged); resp.Status != http.StatusOK {
		t.Fatalf("before the manager's upgrade the new token server refused a status entry of the previous version: %d", resp.Status)
	}

	// Step 2: the new manager.
	testenv.RunManager(t, env.Config, controllers.Options{IssuerURL: issuer, SkipNameValidation: true})
	var enforcedAt time.Time
	testenv.Eventually(t, wait, func() error {
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, signingkeys.DefaultSecret, s); err != nil {
			return err
		}
		set, err := statusmac.Parse(s.Data[statusmac.DataKey])
		if err != nil {
			return err
		}
		if !set.Enforced() {
			return fmt.Errorf("status MACs are not enforced yet")
		}
		enforcedAt = *set.EnforcedSince
		return nil
	})
	// Keep the load on for a while after enforcement, so that the token server has loaded it.
	before := requests.Load()
	testenv.Eventually(t, wait, func() error {
		if requests.Load() < before+2000 {
			return fmt.Errorf("%d requests since enforcement", requests.Load()-before)
		}
		return nil
	})
	stopLoad()
	wg.Wait()
	if n := refused.Load(); n > 0 {
		t.Fatalf("%d of %d requests were refused during the upgrade; the first: %v", n, requests.Load(), firstRefusal.Load())
	}
	t.Logf("%d token requests during the upgrade, none refused; enforced at %s", requests.Load(), enforcedAt)

	for _, l := range clients {
		obj := &m2mv1alpha1.M2MClient{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: l.ns, Name: l.name}, obj); err != nil {
			t.Fatal(err)
		}
		if obj.Status.ClientID != l.id {
			t.Fatalf("%s/%s has client ID %q after the upgrade, want %q", l.ns, l.name, obj.Status.ClientID, l.id)
		}
		if !testenv.Accepts(ctx, env.Client, obj, l.current, time.Now()) || !testenv.Accepts(ctx, env.Client, obj, l.grace, time.Now()) {
			t.Fatalf("%s/%s: the current or grace secret is not authenticated after the upgrade", l.ns, l.name)
		}
		b := &m2mv1alpha1.ClientIDBinding{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: m2mv1alpha1.ClientIDBindingName(l.id)}, b); err != nil || !b.Binds(l.ns, l.name) {
			t.Fatalf("the binding of %s: %+v, %v", l.id, b.Spec, err)
		}
	}
	// The pre-upgrade forgery is clamped to one grace period (an hour) from the upgrade.
	obj := &m2mv1alpha1.M2MClient{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: clients[0].ns, Name: clients[0].name}, obj); err != nil {
		t.Fatal(err)
	}
	for _, e := range obj.Status.AcceptedSecrets {
		if e.Hash == credentials.Hash(forged) && (e.ExpiresAt == nil || e.ExpiresAt.After(enforcedAt.Add(time.Hour+time.Minute))) {
			t.Fatalf("the entry forged before the upgrade expires at %v, more than a grace period after it", e.ExpiresAt)
		}
	}
	// The waiting client still waits: client 1's ID is bound to client 1.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(waiter), waiter); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(waiter.Status.Conditions, m2mv1alpha1.ConditionReady); c == nil || c.Reason != m2mv1alpha1.ReasonDuplicateClientID || waiter.Status.ClientID != "" {
		t.Fatalf("the waiting client: %+v", waiter.Status)
	}
}
