package rotation

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// poisonedStatus has a time that passes the API server's date-time check (it lowercases its input)
// but not metav1.Time's decoding. The CRD refuses such a time in the manager's own status fields
// (TestTheCRDRefusesATimeInStatusThatGoCannotRead); a condition's lastTransitionTime, whose schema
// is metav1.Condition's, and objects stored before that rule still take one.
var poisonedStatus = []byte(`{"status":{"conditions":[{"type":"Poison","status":"True","reason":"Poison","message":"","lastTransitionTime":"2026-01-01t00:00:00z"}]}}`)

// sealedClient creates a client in ns, outside the suite's manager's namespace, with a status as
// the manager would write it: the client ID id, accepting secret.
func sealedClient(t *testing.T, ns, name, id, secret string) *m2mv1alpha1.M2MClient {
	t.Helper()
	ctx := context.Background()
	obj := rotatingClient(ns, name, nil)
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	base := obj.DeepCopy()
	obj.Status.ClientID = id
	obj.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(secret), CreatedAt: metav1.Now()}}
	if err := statusKeys(t).Seal(obj); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Status().Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	return obj
}

// getsToken waits until the token server issues a token to id with secret (want), or refuses it.
func getsToken(t *testing.T, id, secret string, want bool) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, issuer, id, secret)
		if err != nil {
			return err
		}
		if got := resp.Status == http.StatusOK; got != want {
			return fmt.Errorf("token for %s: HTTP %d %s (want a token: %v)", id, resp.Status, resp.Raw, want)
		}
		return nil
	})
}

// Where the status policy is not installed (this suite installs none), someone who may write a
// client's status writes a time that passes the API server's date-time check but not
// metav1.Time's decoding (poisonedStatus). Every typed LIST and WATCH of M2MClients would fail: the
// token server would serve a cache that no longer changes. Instead the one object is left out:
// a client created afterwards in another namespace gets tokens, and the poisoned one gets none
// (it is not kept at its last good version).
func TestOneUndecodableClientLeavesTheTokenServerServingEveryOther(t *testing.T) {
	ctx := context.Background()
	poisonedNS, otherNS := testenv.Namespace(t, env.Client), testenv.Namespace(t, env.Client)
	const poisonedSecret, otherSecret = "the-poisoned-clients-secret-0123456789abcdefgh", "the-other-clients-secret-0123456789abcdefghij"
	poisoned := sealedClient(t, poisonedNS, "poisoned", "m2m-poisoned-client-0000001", poisonedSecret)
	getsToken(t, poisoned.Status.ClientID, poisonedSecret, true)

	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	u.SetNamespace(poisonedNS)
	u.SetName("poisoned")
	// The typed client could not decode the answer, so the patch goes through an unstructured one.
	if err := env.Client.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, poisonedStatus)); err != nil {
		t.Fatalf("the API server refused the lowercase time (then the test cannot fail): %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })

	other := sealedClient(t, otherNS, "other", "m2m-other-client-000000001", otherSecret)
	getsToken(t, other.Status.ClientID, otherSecret, true)
	getsToken(t, poisoned.Status.ClientID, poisonedSecret, false)
}

// The same poisoned status on a client that the manager reconciles would stop its cache, and so
// every reconcile in every namespace. The manager removes that status instead: another client
// created afterwards becomes Ready, and the poisoned one is rebuilt with its client ID (from its
// binding) and its secret (from its Secret), which gets tokens again.
func TestTheManagerRebuildsAStatusThatDoesNotDecodeAndKeepsReconcilingOthers(t *testing.T) {
	ctx := context.Background()
	key := create(t, rotatingClient(sharedNamespace, "poisoned-status", nil))
	before, secret := settled(t, key, nil)

	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	u.SetNamespace(key.Namespace)
	u.SetName(key.Name)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })
	if err := env.Client.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, poisonedStatus)); err != nil {
		t.Fatalf("the API server refused the lowercase time (then the test cannot fail): %v", err)
	}

	otherKey := create(t, rotatingClient(sharedNamespace, "after-the-poison", nil))
	settled(t, otherKey, nil)
	after, afterSecret := settled(t, key, func(obj *m2mv1alpha1.M2MClient, _ string) error {
		if obj.Status.ClientID != before.Status.ClientID {
			return fmt.Errorf("client ID %q, want %q", obj.Status.ClientID, before.Status.ClientID)
		}
		return nil
	})
	if afterSecret != secret {
		t.Fatal("the rebuilt client has another secret; pods holding the old one would be refused")
	}
	getsToken(t, after.Status.ClientID, secret, true)
	if n, err := testenv.CountEvents(ctx, env.Client, key.Namespace, "M2MClient", key.Name, m2mv1alpha1.EventStatusUndecodable); err != nil || n == 0 {
		t.Fatalf("no %s event (%v)", m2mv1alpha1.EventStatusUndecodable, err)
	}
}

// The CRD refuses a time in the manager's status fields that the API server's date-time check
// would take but Go cannot read, so that such a status is never stored there.
func TestTheCRDRefusesATimeInStatusThatGoCannotRead(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	obj := rotatingClient(ns, "lowercase-time", nil)
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	for _, patch := range []string{
		`{"status":{"lastRotationTime":"2026-01-01t00:00:00z"}}`,
		`{"status":{"nextRotationTime":"2026-01-01T00:00:00z"}}`,
		`{"status":{"acceptedSecrets":[{"hash":"sha256:x","createdAt":"2026-01-01t00:00:00Z"}]}}`,
		`{"status":{"lastRotationTime":"2026-01-01T00:00:00+25:00"}}`,
		`{"status":{"acceptedSecrets":[{"hash":"sha256:x","createdAt":"2026-01-01T00:00:00-00:99"}]}}`,
	} {
		err := env.Client.Status().Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want Invalid", patch, err)
		}
	}
	for _, canonical := range []string{"2026-01-01T00:00:00Z", "2026-12-31T23:59:59.123456789+05:30"} {
		patch := `{"status":{"lastRotationTime":"` + canonical + `"}}`
		if err := env.Client.Status().Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatalf("the canonical time %s was refused: %v", canonical, err)
		}
	}
}

// A status writer who poisons the status again as soon as it is repaired (here every 100 ms,
// faster than a reflector's backoff) must not keep the manager's cache stale for anyone else:
// while it writes, a client created afterwards still becomes Ready, and a change to an existing
// client is still seen.
func TestAStatusWriterWhoKeepsPoisoningOneClientDelaysNoOtherClient(t *testing.T) {
	ctx := context.Background()
	poisonedKey := create(t, rotatingClient(sharedNamespace, "poisoned-again", nil))
	settled(t, poisonedKey, nil)
	existingKey := create(t, rotatingClient(sharedNamespace, "existing-neighbour", nil))
	settled(t, existingKey, nil)

	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	u.SetNamespace(poisonedKey.Namespace)
	u.SetName(poisonedKey.Name)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })
	poisonCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	var writes atomic.Int64
	go func() {
		defer close(done)
		for poisonCtx.Err() == nil {
			if env.Client.Status().Patch(poisonCtx, u, client.RawPatch(types.MergePatchType, poisonedStatus)) == nil {
				writes.Add(1)
			}
			select {
			case <-poisonCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	testenv.Eventually(t, wait, func() error {
		if n := writes.Load(); n < 5 {
			return fmt.Errorf("%d poisoning writes so far", n)
		}
		return nil
	})

	otherKey := create(t, rotatingClient(sharedNamespace, "created-while-poisoned", nil))
	settled(t, otherKey, nil)
	update(t, existingKey, func(obj *m2mv1alpha1.M2MClient) { obj.Spec.Scopes = append(obj.Spec.Scopes, "write:things") })
	settled(t, existingKey, nil)
}

// An object nested as deeply as the API server's JSON reader allows (lists, which managedFields
// do not follow, so the API server still reads it back) decodes on its own, but not inside a LIST
// or a watch event, which are one or two levels deeper: it would fail every LIST and WATCH of
// M2MClients, in both caches. (The admission policy m2m-free-form-values refuses it; this suite
// installs no policies, as a cluster without them.) Both caches leave it out, and a client
// created afterwards becomes Ready and gets tokens.
func TestAnObjectNestedAsDeepAsTheAPIServerAllowsStopsNoOtherClient(t *testing.T) {
	ctx := context.Background()
	// {"spec":{"tokenClaims":{"x": 9,997 lists }}} nests 10,000 levels, the decoders' limit.
	deep := rotatingClient(sharedNamespace, "nested-deep", func(obj *m2mv1alpha1.M2MClient) {
		obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims{"x": {Raw: []byte(strings.Repeat("[", 9997) + strings.Repeat("]", 9997))}}
	})
	if err := env.Client.Create(ctx, deep); err != nil {
		t.Fatalf("the API server refused the deep object (then the test cannot fail): %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), deep) })

	key := create(t, rotatingClient(sharedNamespace, "after-the-deep-one", nil))
	obj, secret := settled(t, key, nil)
	getsToken(t, obj.Status.ClientID, secret, true)
}
