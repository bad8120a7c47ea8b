package manager

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// A tenant with every grant it may have in its own namespace cannot give its client a claim that
// a resource server would read as another client's sub, client_id, scope or exp: the admission
// policy refuses reserved names in any case, on create and on update.
func TestATenantCannotSetAReservedClaimInAnyCase(t *testing.T) {
	ctx := context.Background()
	for _, grant := range []testenv.Grant{testenv.GrantClients, testenv.GrantSecrets, testenv.GrantStatus} {
		t.Run(string(grant), func(t *testing.T) {
			ns := namespace(t)
			tenant := testenv.Tenant(t, env, ns, grant)
			for _, bad := range []string{`{"SUB":"m2m-victim"}`, `{"Client_ID":"m2m-victim"}`, `{"EXP":4102444800}`, `{"Scope":"admin:*"}`, `{"team":"a","sub":"x"}`,
				`{"ſub":"m2m-victim"}`, `{"to\u212Aen_type":"x"}`, `{"clıent_ıd":"m2m-victim"}`, `{"İss":"x"}`} {
				obj := newClient(ns, "sneaky")
				obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(bad))
				if err := tenant.Create(ctx, obj); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "tokenClaims cannot set") {
					t.Fatalf("creating with %s: %v, want Invalid", bad, err)
				}
			}
			obj := newClient(ns, "honest")
			obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a"}`))
			if err := tenant.Create(ctx, obj); err != nil {
				t.Fatalf("the tenant may not create its own client: %v", err)
			}
			base := obj.DeepCopy()
			obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a","Sub":"m2m-victim"}`))
			if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); !apierrors.IsInvalid(err) {
				t.Fatalf("updating to a reserved claim: %v, want Invalid", err)
			}
		})
	}
}

// A tenant who may write its Secrets (Kubernetes' edit role) writes a long but guessable secret:
// its unsalted hash would be readable by everyone who may get M2MClients, so it is refused with
// WeakSecret, a message that gives the estimate, and no new accepted hash.
func TestALongButGuessableSecretWrittenByATenantIsRefused(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantSecrets)
	if err := tenant.Create(ctx, newClient(ns, "guessable")); err != nil {
		t.Fatal(err)
	}
	before := waitReady(t, ns, "guessable", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "guessable-credentials")
	guessable := strings.Repeat("0123456789abcdef", 2) // 32 hex digits: 112 bits once lastFour is shown
	s.Data[m2mv1alpha1.SecretKeyClientSecret] = []byte(guessable)
	if err := tenant.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	obj := waitReady(t, ns, "guessable", metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret)
	msg := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady).Message
	if !strings.Contains(msg, "bits of estimated strength") || strings.Contains(msg, guessable) {
		t.Fatalf("the condition says %q", msg)
	}
	if acceptedNow(obj, guessable) || len(obj.Status.AcceptedSecrets) != len(before.Status.AcceptedSecrets) {
		t.Fatalf("the guessable secret changed what is accepted: %+v", obj.Status.AcceptedSecrets)
	}
}

// A Secret the manager cannot write (a tenant made it immutable) does not grow status: every
// retry writes the same pending secret, so at most one hash waits, and Ready says why with the
// API server's reason. The secret in the Secret stays accepted.
func TestASecretThatCannotBeWrittenDoesNotGrowStatus(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantSecrets)
	if err := tenant.Create(ctx, newClient(ns, "stuck")); err != nil {
		t.Fatal(err)
	}
	before := waitReady(t, ns, "stuck", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "stuck-credentials")
	current := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	immutable := true
	s.Immutable = &immutable
	if err := tenant.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	obj := before.DeepCopy()
	base := obj.DeepCopy()
	obj.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "now"}
	if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	failuresBefore := testutil.ToFloat64(controllers.RotationFailures)
	failed := waitReady(t, ns, "stuck", metav1.ConditionFalse, m2mv1alpha1.ReasonSecretWriteFailed)
	if msg := meta.FindStatusCondition(failed.Status.Conditions, m2mv1alpha1.ConditionReady).Message; !strings.Contains(msg, "immutable") {
		t.Fatalf("the condition does not give the API server's reason: %q", msg)
	}
	// The failed rotation is counted for the M2MRotationStuck alert's dashboard panel.
	testenv.Eventually(t, wait, func() error {
		if testutil.ToFloat64(controllers.RotationFailures) <= failuresBefore {
			return errors.New("m2m_manager_secret_write_failures_total did not grow")
		}
		return nil
	})
	// Each poke is one more reconcile, and one more failed write, besides the retries.
	for range 5 {
		testenv.Poke(t, env.Client, obj)
		time.Sleep(200 * time.Millisecond)
	}
	get(t, obj)
	if n := len(obj.Status.AcceptedSecrets); n > len(before.Status.AcceptedSecrets)+1 {
		t.Fatalf("status grew from %d to %d accepted secrets while the Secret could not be written", len(before.Status.AcceptedSecrets), n)
	}
	if !acceptedNow(obj, current) {
		t.Fatal("the secret in the Secret is no longer accepted")
	}
}

// An admin limits a namespace's scopes and audiences with annotations its tenant cannot edit; a
// tenant's client outside them is refused with a message that says which and why, and a
// namespace without the annotations allows any.
func TestANamespacesAnnotationsLimitTheScopesAndAudiencesOfItsClients(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	nsObj := &corev1.Namespace{}
	nsObj.Name = ns
	get(t, nsObj)
	nsObj.Annotations = map[string]string{
		"m2m.dev/allowed-scopes":    "read:* write:invoices",
		"m2m.dev/allowed-audiences": "https://billing.example.com/*, https://ledger.example.com",
	}
	if err := env.Client.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	limited := func(name string, scopes []m2mv1alpha1.Scope, audiences []m2mv1alpha1.Audience) *m2mv1alpha1.M2MClient {
		obj := newClient(ns, name)
		obj.Spec.Scopes, obj.Spec.Audiences = scopes, audiences
		return obj
	}
	// The policy takes effect a moment after it is installed.
	testenv.Eventually(t, wait, func() error {
		err := tenant.Create(ctx, limited("probe", []m2mv1alpha1.Scope{"admin:*"}, nil), client.DryRunAll)
		if !apierrors.IsForbidden(err) {
			return fmt.Errorf("admin:* was not refused: %v", err)
		}
		return nil
	})
	for sentence, tc := range map[string]struct {
		obj  *m2mv1alpha1.M2MClient
		want string // "" means allowed
	}{
		"read:* allows any read scope":                 {limited("reader", []m2mv1alpha1.Scope{"read:invoices", "read:*"}, nil), ""},
		"an exact scope is allowed":                    {limited("writer", []m2mv1alpha1.Scope{"write:invoices"}, nil), ""},
		"another action is refused":                    {limited("admin", []m2mv1alpha1.Scope{"read:x", "admin:*"}, nil), "admin:*"},
		"write:* is more than write:invoices":          {limited("all-writes", []m2mv1alpha1.Scope{"write:*"}, nil), "write:*"},
		"a '*' in the action position is literal":      {limited("star", []m2mv1alpha1.Scope{"*:invoices"}, nil), "*:invoices"},
		"an audience under the allowed prefix is fine": {limited("api", nil, []m2mv1alpha1.Audience{"https://billing.example.com/api"}), ""},
		"an exact audience is allowed":                 {limited("ledger", nil, []m2mv1alpha1.Audience{"https://ledger.example.com"}), ""},
		"an audience only sharing the host is refused": {limited("ledger2", nil, []m2mv1alpha1.Audience{"https://ledger.example.com.evil"}), "ledger.example.com.evil"},
		"another service's audience is refused":        {limited("payments", nil, []m2mv1alpha1.Audience{"https://payments.example.com"}), "payments.example.com"},
	} {
		t.Run(sentence, func(t *testing.T) {
			err := tenant.Create(ctx, tc.obj, client.DryRunAll)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "m2m.dev/allowed-")):
				t.Fatalf("got %v, want Forbidden naming %q and the annotation", err, tc.want)
			}
		})
	}

	// The tenant cannot widen its own limits.
	nsObj.Annotations["m2m.dev/allowed-scopes"] = "*"
	if err := tenant.Update(ctx, nsObj); !apierrors.IsForbidden(err) {
		t.Fatalf("the tenant changed its namespace's annotations: %v", err)
	}
	// A namespace without the annotations allows any scope and audience.
	open := namespace(t)
	other := testenv.Tenant(t, env, open, testenv.GrantClients)
	free := newClient(open, "free")
	free.Spec.Scopes, free.Spec.Audiences = []m2mv1alpha1.Scope{"admin:*"}, []m2mv1alpha1.Audience{"https://payments.example.com"}
	if err := other.Create(ctx, free, client.DryRunAll); err != nil {
		t.Fatalf("a namespace without annotations refused: %v", err)
	}
}

// An admin caps the issuance limit that a namespace's clients may give themselves, with
// annotations its tenant cannot edit: an override over a cap is refused with a message that
// names the value, the cap and the annotation; one within them, or without an override at all,
// is allowed; an override a client already has survives a tightened cap until it changes; and a
// tenant can neither raise another namespace's caps nor set an override there.
func TestANamespacesAnnotationsCapTheIssuanceLimitsOfItsClients(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	annotate(t, ns, map[string]string{"m2m.dev/max-issuance-per-minute": "6000", "m2m.dev/max-issuance-burst": "200"})
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	limited := func(ns, name string, perMinute, burst int32) *m2mv1alpha1.M2MClient {
		obj := newClient(ns, name)
		obj.Spec.IssuanceLimit = &m2mv1alpha1.IssuanceLimit{PerMinute: perMinute, Burst: burst}
		return obj
	}
	refused := func(c client.Client, obj client.Object, want string) error {
		err := c.Create(ctx, obj, client.DryRunAll)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
			return fmt.Errorf("got %v, want Forbidden saying %q", err, want)
		}
		return nil
	}
	// The policy sees the annotations a moment after they are written.
	testenv.Eventually(t, wait, func() error { return refused(tenant, limited(ns, "probe", 6001, 1), "6001") })
	for sentence, tc := range map[string]struct {
		obj  *m2mv1alpha1.M2MClient
		want string // "" means allowed
	}{
		"an override at both caps is allowed":                    {limited(ns, "at-caps", 6000, 200), ""},
		"an override below the server's default is allowed":      {limited(ns, "slow", 1, 1), ""},
		"a client without an override is allowed":                {newClient(ns, "plain"), ""},
		"a rate over the cap is refused, naming the annotation":  {limited(ns, "fast", 6001, 10), "spec.issuanceLimit.perMinute: 6001 is over 6000 tokens a minute, the most namespace " + ns + " allows (its annotation m2m.dev/max-issuance-per-minute)"},
		"a burst over the cap is refused, naming the annotation": {limited(ns, "bursty", 60, 201), "spec.issuanceLimit.burst: 201 is over 200 tokens at once, the most namespace " + ns + " allows (its annotation m2m.dev/max-issuance-burst)"},
	} {
		t.Run(sentence, func(t *testing.T) {
			if tc.want == "" {
				if err := tenant.Create(ctx, tc.obj, client.DryRunAll); err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err := refused(tenant, tc.obj, tc.want); err != nil {
				t.Fatal(err)
			}
		})
	}

	// A cap tightened later keeps the override a client has, so that its other updates (a
	// rotation) go on; changing the override must fit the new cap.
	kept := limited(ns, "kept", 6000, 200)
	if err := tenant.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	annotate(t, ns, map[string]string{"m2m.dev/max-issuance-per-minute": "600"})
	testenv.Eventually(t, wait, func() error { return refused(tenant, limited(ns, "probe", 601, 1), "601") })
	base := kept.DeepCopy()
	kept.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "after-a-leak"}
	if err := tenant.Patch(ctx, kept, client.MergeFrom(base)); err != nil {
		t.Fatalf("an update that keeps the override was refused: %v", err)
	}
	base = kept.DeepCopy()
	kept.Spec.IssuanceLimit.Burst = 100
	if err := tenant.Patch(ctx, kept, client.MergeFrom(base)); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "6000 is over 600") {
		t.Fatalf("a changed override over the tightened cap: %v, want Forbidden", err)
	}

	// The tenant cannot raise its own caps, nor another namespace's, nor set an override there.
	other := namespace(t)
	annotate(t, other, map[string]string{"m2m.dev/max-issuance-per-minute": "60"})
	for _, name := range []string{ns, other} {
		nsObj := &corev1.Namespace{}
		nsObj.Name = name
		get(t, nsObj)
		nsObj.Annotations["m2m.dev/max-issuance-per-minute"] = "1000000"
		if err := tenant.Update(ctx, nsObj); !apierrors.IsForbidden(err) {
			t.Fatalf("the tenant of %s changed the caps of %s: %v", ns, name, err)
		}
	}
	if err := tenant.Create(ctx, limited(other, "intruder", 60, 1), client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Fatalf("the tenant of %s created a client in %s: %v", ns, other, err)
	}
	// A rate cap without a burst cap caps the burst at one minute's worth: a capped rate does
	// not leave a new client 100,000 tokens at once.
	testenv.Eventually(t, wait, func() error {
		return refused(env.Client, limited(other, "bursty", 60, 61), "61 is over 60 tokens at once, the most namespace "+other+" allows (its annotation m2m.dev/max-issuance-per-minute, without m2m.dev/max-issuance-burst)")
	})
	if err := env.Client.Create(ctx, limited(other, "minute", 60, 60), client.DryRunAll); err != nil {
		t.Fatalf("a burst of one minute's worth under a rate cap alone: %v", err)
	}

	// A cap that is not a whole number refuses every new override and says so; a client
	// without one is unaffected.
	broken := namespace(t)
	annotate(t, broken, map[string]string{"m2m.dev/max-issuance-per-minute": "10/s"})
	testenv.Eventually(t, wait, func() error {
		return refused(env.Client, limited(broken, "any", 1, 1), `its annotation m2m.dev/max-issuance-per-minute is "10/s", not a whole number`)
	})
	if err := env.Client.Create(ctx, newClient(broken, "plain"), client.DryRunAll); err != nil {
		t.Fatalf("a client without an override in a namespace with a broken cap: %v", err)
	}
	// Without annotations, any override within the CRD's bounds is allowed, and the bounds hold.
	open := namespace(t)
	if err := env.Client.Create(ctx, limited(open, "fastest", 1000000, 100000), client.DryRunAll); err != nil {
		t.Fatalf("an override at the CRD's bounds: %v", err)
	}
	for _, over := range []*m2mv1alpha1.M2MClient{limited(open, "too-fast", 1000001, 1), limited(open, "too-bursty", 1, 100001), limited(open, "zero", 0, 1)} {
		if err := env.Client.Create(ctx, over, client.DryRunAll); !apierrors.IsInvalid(err) {
			t.Fatalf("%+v outside the CRD's bounds: %v, want Invalid", over.Spec.IssuanceLimit, err)
		}
	}
}

// A tenant whose grant includes m2mclients/status (many clusters grant m2m.dev "*") cannot write
// it: the policy m2m-manager-writes-status refuses a hash it knows the secret of, with an expiry
// in 9999, and a client ID taken from another namespace.
func TestATenantWhoMayWriteStatusCannotForgeCredentials(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	if err := tenant.Create(ctx, newClient(ns, "forger")); err != nil {
		t.Fatal(err)
	}
	obj := waitReady(t, ns, "forger", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	for sentence, forge := range map[string]func(*m2mv1alpha1.M2MClient){
		"a hash of a secret the tenant chose, never expiring": func(o *m2mv1alpha1.M2MClient) {
			forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
			o.Status.AcceptedSecrets = append(o.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{
				Hash: credentials.Hash("the-tenant-knows-this-secret-0123456789"), CreatedAt: metav1.Now(), ExpiresAt: &forever,
			})
		},
		"another namespace's client ID": func(o *m2mv1alpha1.M2MClient) { o.Status.ClientID = "m2m-victim-in-team-b" },
	} {
		t.Run(sentence, func(t *testing.T) {
			forged := obj.DeepCopy()
			forge(forged)
			err := tenant.Status().Update(ctx, forged)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may write M2MClient status") {
				t.Fatalf("status update: %v, want Forbidden by m2m-manager-writes-status", err)
			}
			base := obj.DeepCopy()
			forged = obj.DeepCopy()
			forge(forged)
			if err := tenant.Status().Patch(ctx, forged, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
				t.Fatalf("status patch: %v, want Forbidden", err)
			}
		})
	}
}

// A tenant cannot claim a chosen client ID (one that resource servers may already trust) unless
// an admin marked its namespace for imports; it may still pin the ID the manager generated.
func TestATenantImportsAClientIDOnlyWhereAnAdminAllowsIt(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	squatter := newClient(ns, "squatter")
	squatter.Spec.ClientID = "legacy-billing-prod"
	err := tenant.Create(ctx, squatter)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "m2m.dev/allow-client-id-import") {
		t.Fatalf("importing into an unmarked namespace: %v, want Forbidden naming the annotation", err)
	}

	// Pinning its own generated ID is not an import.
	if err := tenant.Create(ctx, newClient(ns, "pinned")); err != nil {
		t.Fatal(err)
	}
	obj := waitReady(t, ns, "pinned", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	base := obj.DeepCopy()
	obj.Spec.ClientID = obj.Status.ClientID
	if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatalf("pinning the generated ID: %v", err)
	}

	allowImports(t, ns)
	if err := tenant.Create(ctx, squatter); err != nil {
		t.Fatalf("importing into a marked namespace: %v", err)
	}
}

// statusWriter writes status as the one identity the policy lets through, standing in for
// whoever can write status where the policy is not installed.
func statusWriter(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(managerConfig, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The second layer: the manager treats status it did not write as lost. A hash someone added
// with an expiry in 9999 is discarded (with a StatusDiscarded event), and the client's own
// secret stays accepted throughout.
func TestTheManagerDiscardsStatusItDidNotWrite(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "target"))
	obj := waitReady(t, ns, "target", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	secret := string(secretOf(t, ns, "target-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])
	forged := credentials.Hash("the-forger-knows-this-secret-0123456789abc")
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	base := obj.DeepCopy()
	obj.Status.AcceptedSecrets = append(obj.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: forged, CreatedAt: metav1.Now(), ExpiresAt: &forever, MAC: obj.Status.AcceptedSecrets[0].MAC})
	if err := statusWriter(t).Status().Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		get(t, obj)
		for _, e := range obj.Status.AcceptedSecrets {
			if e.Hash == forged {
				return fmt.Errorf("the forged hash is still in status")
			}
		}
		if events(t, ns, "target", m2mv1alpha1.EventStatusDiscarded) == 0 {
			return fmt.Errorf("no %s event", m2mv1alpha1.EventStatusDiscarded)
		}
		return nil
	})
	if !acceptedNow(obj, secret) {
		t.Fatal("the client's own secret is no longer accepted")
	}
}

// The rebuild of a lost status is no way around the MAC. A tenant with grants b and c wipes
// its older client's status and writes a younger client's ID from another namespace into its
// own Secret: the manager rebuilds the tenant's client with the ID bound to it, writes that ID
// back into the Secret, and the younger client keeps its own.
func TestAWipedStatusAndARewrittenSecretDoNotGiveAClientAnotherNamespacesID(t *testing.T) {
	nsA, nsB := namespace(t), namespace(t)
	tenant := testenv.Tenant(t, env, nsA, testenv.GrantStatus)
	if err := tenant.Create(ctx, newClient(nsA, "older")); err != nil {
		t.Fatal(err)
	}
	older := waitReady(t, nsA, "older", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	ownID := older.Status.ClientID
	create(t, newClient(nsB, "younger"))
	victimID := waitReady(t, nsB, "younger", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady).Status.ClientID

	// The Secret first, made immutable so that the manager cannot write its own ID back before
	// the status is wiped; then the status.
	s := secretOf(t, nsA, "older-credentials")
	s.Data[m2mv1alpha1.SecretKeyClientID] = []byte(victimID)
	s.Immutable = ptr.To(true)
	if err := tenant.Update(ctx, s); err != nil {
		t.Fatalf("the tenant may not write its Secret (grant b): %v", err)
	}
	wipe := client.RawPatch(types.MergePatchType, []byte(`{"status":{"clientID":null,"clientIDMAC":null,"acceptedSecrets":null}}`))
	if err := statusWriter(t).Status().Patch(ctx, older, wipe); err != nil {
		t.Fatal(err)
	}
	// Rebuilt means a StatusRecovered event (emitted after the rebuilt status is stored), or
	// DuplicateClientID if the manager had taken the Secret's ID; the status is read after that.
	testenv.Eventually(t, wait, func() error {
		if events(t, nsA, "older", m2mv1alpha1.EventStatusRecovered) > 0 {
			return nil
		}
		get(t, older)
		if ready := meta.FindStatusCondition(older.Status.Conditions, m2mv1alpha1.ConditionReady); ready != nil && ready.Reason == m2mv1alpha1.ReasonDuplicateClientID {
			return nil
		}
		return fmt.Errorf("the manager has not rebuilt the status yet")
	})
	get(t, older)
	if older.Status.ClientID != ownID {
		t.Fatalf("the rebuilt client has ID %q, want its own %q (the victim's is %q); status %+v", older.Status.ClientID, ownID, victimID, older.Status)
	}
	if got := waitReady(t, nsB, "younger", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady); got.Status.ClientID != victimID {
		t.Fatalf("the victim's ID changed to %q", got.Status.ClientID)
	}
}

// With grant b alone a tenant cannot write status, but it can prepare a Secret before its client
// exists, owned by the client's name, naming another namespace's client ID and a secret it knows.
// The new client gets a new ID: an ID only its own Secret names is never taken.
func TestAPreparedSecretDoesNotGiveANewClientAnotherNamespacesID(t *testing.T) {
	nsA, nsB := namespace(t), namespace(t)
	create(t, newClient(nsB, "victim"))
	victimID := waitReady(t, nsB, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady).Status.ClientID
	tenant := testenv.Tenant(t, env, nsA, testenv.GrantSecrets)
	prepared := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "thief-credentials", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: m2mv1alpha1.GroupVersion.String(), Kind: "M2MClient", Name: "thief", UID: "00000000-0000-0000-0000-000000000000", Controller: ptr.To(true),
		}}},
		Data: map[string][]byte{
			m2mv1alpha1.SecretKeyClientID:     []byte(victimID),
			m2mv1alpha1.SecretKeyClientSecret: []byte("Tq7vN2xKp9LmR4sW8yZb3cFh6jD1gA5eU0oIiYtXw"),
		},
	}
	if err := tenant.Create(ctx, prepared); err != nil {
		t.Fatal(err)
	}
	if err := tenant.Create(ctx, newClient(nsA, "thief")); err != nil {
		t.Fatal(err)
	}
	got := waitReady(t, nsA, "thief", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if got.Status.ClientID == victimID || got.Status.ClientID == "" {
		t.Fatalf("the new client got ID %q (the victim's is %q)", got.Status.ClientID, victimID)
	}
	if got := waitReady(t, nsB, "victim", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady); got.Status.ClientID != victimID {
		t.Fatalf("the victim's ID changed to %q", got.Status.ClientID)
	}
}

// ClientIDBindings are cluster-scoped: a tenant with every grant in its namespace can neither
// read, create nor delete one, so it can neither learn, take nor release another's ID.
func TestATenantCannotTouchClientIDBindings(t *testing.T) {
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	if err := tenant.Create(ctx, newClient(ns, "mine")); err != nil {
		t.Fatal(err)
	}
	id := waitReady(t, ns, "mine", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady).Status.ClientID
	b := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: m2mv1alpha1.ClientIDBindingName(id)}}
	if err := tenant.Get(ctx, client.ObjectKeyFromObject(b), b); !apierrors.IsForbidden(err) {
		t.Fatalf("get: %v, want Forbidden", err)
	}
	if err := tenant.Delete(ctx, b); !apierrors.IsForbidden(err) {
		t.Fatalf("delete: %v, want Forbidden", err)
	}
	taken := &m2mv1alpha1.ClientIDBinding{ObjectMeta: metav1.ObjectMeta{Name: "m2m-reserved-by-tenant"}, Spec: m2mv1alpha1.ClientIDBindingSpec{ClientID: "m2m-reserved-by-tenant", Namespace: ns, Name: "mine"}}
	if err := tenant.Create(ctx, taken); !apierrors.IsForbidden(err) {
		t.Fatalf("create: %v, want Forbidden", err)
	}
}

// A tenant cannot give its client a claim that resource servers read as authorization or as the
// caller's identity (scp, roles, groups, ...), in any case, unless an administrator allows the
// name on its namespace; a client that already carried one keeps it unchanged through updates
// after the annotation goes, and cannot change it.
func TestATenantSetsAClaimResourceServersReadAsAuthorizationOnlyWhereItsNamespaceAllowsIt(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	withClaims := func(name, raw string) *m2mv1alpha1.M2MClient {
		obj := newClient(ns, name)
		obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(raw))
		return obj
	}
	// The policy takes effect a moment after it is installed.
	testenv.Eventually(t, wait, func() error {
		if err := tenant.Create(ctx, withClaims("probe", `{"scp":"admin"}`), client.DryRunAll); !apierrors.IsForbidden(err) {
			return fmt.Errorf("scp was not refused: %v", err)
		}
		return nil
	})
	for i, bad := range []string{`{"scp":"admin"}`, `{"Roles":["admin"]}`, `{"team":"a","groups":["admins"]}`, `{"permissions":["*"]}`,
		`{"ENTITLEMENTS":["all"]}`, `{"cid":"m2m-victim"}`, `{"appid":"victim"}`, `{"clientId":"victim"}`, `{"ſcp":"admin"}`} {
		err := tenant.Create(ctx, withClaims("bad-"+strconv.Itoa(i), bad))
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "m2m.dev/allowed-claims") {
			t.Fatalf("creating with %s: %v, want Forbidden naming the annotation", bad, err)
		}
	}
	if err := tenant.Create(ctx, withClaims("plain", `{"team":"a","tier":1}`)); err != nil {
		t.Fatalf("a claim without a meaning to resource servers was refused: %v", err)
	}

	nsObj := &corev1.Namespace{}
	nsObj.Name = ns
	get(t, nsObj)
	nsObj.Annotations = map[string]string{m2mv1alpha1.AllowedClaimsAnnotation: "roles, Groups"}
	if err := env.Client.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	legacy := withClaims("legacy", `{"roles":["reader"],"groups":["billing"]}`)
	if err := tenant.Create(ctx, legacy); err != nil {
		t.Fatalf("roles and groups, which the namespace allows, were refused: %v", err)
	}
	templated := withClaims("templated", `{"roles":"${role}"}`)
	templated.Spec.TrustedMetadata = claims(`{"role":"reader"}`)
	if err := tenant.Create(ctx, templated); err != nil {
		t.Fatalf("a templated roles claim, which the namespace allows, was refused: %v", err)
	}
	if err := tenant.Create(ctx, withClaims("still-no-scp", `{"roles":["reader"],"scp":"admin"}`)); !apierrors.IsForbidden(err) {
		t.Fatalf("scp, which the namespace does not allow, with allowed roles: %v, want Forbidden", err)
	}

	// The administrator takes the allowance back: the client keeps its claims as they are.
	get(t, nsObj)
	delete(nsObj.Annotations, m2mv1alpha1.AllowedClaimsAnnotation)
	if err := env.Client.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	base := legacy.DeepCopy()
	legacy.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "1"}
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); err != nil {
		t.Fatalf("an update that keeps the claims the client already had was refused: %v", err)
	}
	base = legacy.DeepCopy()
	legacy.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"roles":["admin"],"groups":["billing"]}`))
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Fatalf("changing roles once the namespace no longer allows it: %v, want Forbidden", err)
	}
	// A templated guarded claim renders from trustedMetadata: the template unchanged is not the
	// value unchanged, so the metadata it renders from cannot change either.
	base = templated.DeepCopy()
	templated.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "1"}
	if err := tenant.Patch(ctx, templated, client.MergeFrom(base)); err != nil {
		t.Fatalf("an update that keeps a templated claim and its metadata was refused: %v", err)
	}
	base = templated.DeepCopy()
	templated.Spec.TrustedMetadata = claims(`{"role":"admin"}`)
	if err := tenant.Patch(ctx, templated, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Fatalf("changing the metadata a templated roles claim renders from, once the namespace no longer allows it: %v, want Forbidden", err)
	}
}

// A client whose tokenClaims are over the size the token server issues is not Ready, with a reason
// that says so; made smaller, it is.
func TestAClientWithClaimsTooLargeIsNotReady(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	obj := newClient(ns, "big-claims")
	obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"blob":"` + strings.Repeat("x", m2mv1alpha1.MaxTokenClaimsBytes) + `"}`))
	if err := tenant.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "big-claims", metav1.ConditionFalse, m2mv1alpha1.ReasonClaimsTooLarge)
	base := obj.DeepCopy()
	obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a"}`))
	if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "big-claims", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
}

// nested is a claim value nested depth levels deep: {"a":{"a":...1...}}.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// A tenant who could store a value nested thousands of levels deep would make an object the API
// server cannot read back (its managedFields nest deeper than its JSON reader allows): every LIST
// of M2MClients in the cluster would fail, for the manager, the token server and kubectl. The
// policy m2m-free-form-values bounds tokenClaims and trustedMetadata values to three levels;
// an object stored before it keeps an unchanged value through updates.
func TestATenantCannotStoreFreeFormValuesNestedBeyondWhatClaimsNeed(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	with := func(name, claimsJSON, metadataJSON string) *m2mv1alpha1.M2MClient {
		obj := newClient(ns, name)
		if claimsJSON != "" {
			obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(claimsJSON))
		}
		if metadataJSON != "" {
			obj.Spec.TrustedMetadata = claims(metadataJSON)
		}
		return obj
	}
	testenv.Eventually(t, wait, func() error {
		if err := tenant.Create(ctx, with("probe", `{"x":`+nested(3)+`}`, ""), client.DryRunAll); !apierrors.IsInvalid(err) {
			return fmt.Errorf("a value four levels deep was not refused: %v", err)
		}
		return nil
	})
	hundred := "[" + strings.Repeat(`"x",`, 99) + `"x"]`
	for i, bad := range []string{
		`{"deep":` + nested(9990) + `}`,
		`{"x":` + nested(3) + `}`,
		`{"x":[[1]]}`,
		`{"x":[{"a":1}]}`,
		`{"x":{"a":[[1]]}}`,
		`{"x":{"a":{"b":1}}}`,
		`{"x":[` + strings.Repeat(`"x",`, 100) + `"x"]}`,
	} {
		for _, where := range []string{"tokenClaims", "trustedMetadata"} {
			obj := with(fmt.Sprintf("bad-%d", i), bad, "")
			if where == "trustedMetadata" {
				obj = with(fmt.Sprintf("bad-%d", i), "", bad)
			}
			err := tenant.Create(ctx, obj)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec."+where) {
				short := bad
				if len(short) > 40 {
					short = short[:40] + "..."
				}
				t.Fatalf("%s %s: %v, want Invalid naming spec.%s", where, short, err, where)
			}
		}
	}
	good := `{"team":"a","tier":1,"ratio":0.5,"on":true,"none":null,"tags":` + hundred + `,"tenant":{"id":"x","plans":["pro","max"],"n":2}}`
	if err := tenant.Create(ctx, with("good", good, good)); err != nil {
		t.Fatalf("values of the shapes claims need were refused: %v", err)
	}

	// An object stored before the policy existed keeps its value through an update that leaves it
	// as it is, and cannot change it to another value of a shape the policy refuses.
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	binding.Name = "m2m-free-form-values"
	get(t, binding)
	kept := binding.DeepCopy()
	kept.ResourceVersion = ""
	if err := env.Client.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := env.Client.Create(ctx, kept); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	legacy := with("legacy", `{"x":`+nested(3)+`}`, "")
	testenv.Eventually(t, wait, func() error { return tenant.Create(ctx, legacy.DeepCopy()) })
	restore()
	testenv.Eventually(t, wait, func() error {
		if err := tenant.Create(ctx, with("probe-2", `{"x":`+nested(3)+`}`, ""), client.DryRunAll); !apierrors.IsInvalid(err) {
			return fmt.Errorf("the restored policy does not refuse yet: %v", err)
		}
		return nil
	})
	get(t, legacy)
	// Merge patches, which the manager's status writes cannot make conflict.
	base := legacy.DeepCopy()
	legacy.Spec.Scopes = append(legacy.Spec.Scopes, "write:things")
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); err != nil {
		t.Fatalf("an update that keeps a stored value as it is was refused: %v", err)
	}
	base = legacy.DeepCopy()
	legacy.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"x":` + nested(4) + `}`))
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); !apierrors.IsInvalid(err) {
		t.Fatalf("changing a stored value to another refused shape: %v, want Invalid", err)
	}
}

// The labels and annotations a client asks for on its Secret are bounded as the Secret bounds
// them (and annotation values at 1,024 characters), so that no client is large in the manager's
// memory, which keeps them to write the Secret.
func TestTheSecretsLabelsAndAnnotationsAreBoundedAtAdmission(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	many := map[string]string{}
	for i := range 33 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for i, tc := range []struct {
		labels, annotations map[string]string
		field               string
	}{
		{labels: many, field: "spec.secret.labels"},
		{annotations: many, field: "spec.secret.annotations"},
		{labels: map[string]string{"app": strings.Repeat("x", 64)}, field: "spec.secret.labels"},
		{annotations: map[string]string{"notes": strings.Repeat("x", 1025)}, field: "spec.secret.annotations"},
		{annotations: map[string]string{strings.Repeat("k", 318): "v"}, field: "spec.secret.annotations"},
	} {
		obj := newClient(ns, fmt.Sprintf("big-%d", i))
		obj.Spec.Secret.Labels, obj.Spec.Secret.Annotations = tc.labels, tc.annotations
		if err := tenant.Create(ctx, obj); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("case %d: %v, want Invalid naming %s", i, err, tc.field)
		}
	}
	obj := newClient(ns, "fits")
	obj.Spec.Secret.Labels = map[string]string{"app": strings.Repeat("x", 63)}
	obj.Spec.Secret.Annotations = map[string]string{"notes": strings.Repeat("x", 1024)}
	if err := tenant.Create(ctx, obj); err != nil {
		t.Fatalf("labels and annotations within the bounds were refused: %v", err)
	}
}

// A tenant's string claim that names no usable trustedMetadata entry, or that breaks the template
// syntax, is refused at admission, on create and when an update removes the entry it names;
// claims that name existing entries, escape $ as $$, or are no string are accepted.
func TestATenantsClaimTemplateMustNameItsTrustedMetadata(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantClients)
	meta := claims(`{"api_version":"v2","tier":3,"beta":true,"team":{"name":"billing"},"nothing":null}`)
	create := func(name, tokenClaims string) (*m2mv1alpha1.M2MClient, error) {
		obj := newClient(ns, name)
		obj.Spec.TrustedMetadata = meta
		obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(tokenClaims))
		return obj, tenant.Create(ctx, obj)
	}
	// The policy takes effect a moment after the others that InstallAdmission waits for.
	testenv.Eventually(t, wait, func() error {
		obj := newClient(ns, "probe")
		obj.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"v":"${missing}"}`))
		if err := tenant.Create(ctx, obj, client.DryRunAll); !apierrors.IsInvalid(err) {
			return fmt.Errorf("a claim naming no entry: %v, want Invalid", err)
		}
		return nil
	})
	for _, bad := range []string{`{"v":"${apiVersion}"}`, `{"v":"ok","w":"${team}"}`, `{"v":"${nothing}"}`, `{"v":"${}"}`,
		`{"v":"costs $5 in ${api_version}"}`, `{"v":"${api_version"}`, `{"v":"$${api_version}${x}"}`} {
		if _, err := create("bad", bad); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.tokenClaims") {
			t.Errorf("creating with %s: %v, want Invalid", bad, err)
		}
	}
	for i, good := range []string{`{"v":"api-${api_version}","t":"${tier}/${beta}"}`, `{"v":"costs $$5, literally $${x}"}`,
		`{"v":["${missing}"],"n":5}`, `{"v":"no template"}`, `{"v":"costs $5, written before templates"}`} {
		if _, err := create(fmt.Sprintf("good-%d", i), good); err != nil {
			t.Errorf("creating with %s: %v", good, err)
		}
	}
	obj, err := create("named", `{"v":"${api_version}"}`)
	if err != nil {
		t.Fatal(err)
	}
	base := obj.DeepCopy()
	obj.Spec.TrustedMetadata = claims(`{"tier":3}`)
	if err := tenant.Patch(ctx, obj, client.MergeFrom(base)); !apierrors.IsInvalid(err) {
		t.Fatalf("removing the entry a claim names: %v, want Invalid", err)
	}
}

// A namespace annotated m2m.dev/require-dpop: "true" takes new clients only with
// spec.dpop.required: true (the token server reads no Namespaces, so the rule is on the client); a
// client created before the annotation keeps its other updates until spec.dpop changes, which must
// then require DPoP; other namespaces are unaffected, and the tenant cannot remove the annotation.
func TestANamespaceAnnotatedToRequireDPoPTakesOnlyClientsThatRequireIt(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	withDPoP := func(ns, name string, policy *m2mv1alpha1.DPoPPolicy) *m2mv1alpha1.M2MClient {
		obj := newClient(ns, name)
		obj.Spec.DPoP = policy
		return obj
	}
	legacy := newClient(ns, "legacy")
	if err := tenant.Create(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	annotate(t, ns, map[string]string{"m2m.dev/require-dpop": "true"})
	const want = `spec.dpop.required must be true in namespace `
	refused := func(err error) error {
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want+ns+`, whose annotation m2m.dev/require-dpop is "true"`) {
			return fmt.Errorf("got %v, want Forbidden saying %q", err, want)
		}
		return nil
	}
	// The policy sees the annotation a moment after it is written.
	testenv.Eventually(t, wait, func() error { return refused(tenant.Create(ctx, newClient(ns, "probe"), client.DryRunAll)) })
	for sentence, tc := range map[string]struct {
		obj     *m2mv1alpha1.M2MClient
		allowed bool
	}{
		"a client with spec.dpop.required: true is allowed":  {withDPoP(ns, "bound", &m2mv1alpha1.DPoPPolicy{Required: true}), true},
		"a client without spec.dpop is refused":              {newClient(ns, "plain"), false},
		"a client with spec.dpop.required: false is refused": {withDPoP(ns, "optional", &m2mv1alpha1.DPoPPolicy{}), false},
	} {
		t.Run(sentence, func(t *testing.T) {
			err := tenant.Create(ctx, tc.obj, client.DryRunAll)
			if tc.allowed && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.allowed {
				if err := refused(err); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	// The client from before the annotation: an update that leaves spec.dpop alone goes on (a
	// rotation after a leak, the manager's own writes); a change of spec.dpop must require DPoP.
	base := legacy.DeepCopy()
	legacy.Annotations = map[string]string{m2mv1alpha1.RotateAnnotation: "after-a-leak"}
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); err != nil {
		t.Fatalf("an update that leaves spec.dpop alone was refused: %v", err)
	}
	base = legacy.DeepCopy()
	legacy.Spec.DPoP = &m2mv1alpha1.DPoPPolicy{}
	if err := refused(tenant.Patch(ctx, legacy, client.MergeFrom(base), client.DryRunAll)); err != nil {
		t.Fatalf("spec.dpop set without required: %v", err)
	}
	legacy.Spec.DPoP = &m2mv1alpha1.DPoPPolicy{Required: true}
	if err := tenant.Patch(ctx, legacy, client.MergeFrom(base)); err != nil {
		t.Fatalf("spec.dpop.required set to true: %v", err)
	}
	base = legacy.DeepCopy()
	legacy.Spec.DPoP = nil
	if err := refused(tenant.Patch(ctx, legacy, client.MergeFrom(base), client.DryRunAll)); err != nil {
		t.Fatalf("spec.dpop removed again: %v", err)
	}

	// The tenant cannot take the annotation off, and a namespace without it takes any client.
	nsObj := &corev1.Namespace{}
	nsObj.Name = ns
	get(t, nsObj)
	delete(nsObj.Annotations, "m2m.dev/require-dpop")
	if err := tenant.Update(ctx, nsObj); !apierrors.IsForbidden(err) {
		t.Fatalf("the tenant removed its namespace's annotation: %v", err)
	}
	open := namespace(t)
	annotate(t, open, map[string]string{"m2m.dev/require-dpop": "false"})
	if err := env.Client.Create(ctx, newClient(open, "plain"), client.DryRunAll); err != nil {
		t.Fatalf("a client without spec.dpop where the annotation is \"false\": %v", err)
	}
}
