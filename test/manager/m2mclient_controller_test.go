package manager

import (
	"context"
	"encoding/json"
	"fmt"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

var ctx = context.Background()

// acceptedNow reports whether the client's status accepts secret now, with valid MACs.
func acceptedNow(obj *m2mv1alpha1.M2MClient, secret string) bool {
	return testenv.Accepts(ctx, env.Client, obj, secret, time.Now())
}

func entryFor(obj *m2mv1alpha1.M2MClient, secret string) *m2mv1alpha1.AcceptedSecret {
	h := credentials.Hash(secret)
	for i := range obj.Status.AcceptedSecrets {
		if obj.Status.AcceptedSecrets[i].Hash == h {
			return &obj.Status.AcceptedSecrets[i]
		}
	}
	return nil
}

func TestCreatingAClientWritesASecretWithAcceptedCredentials(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "billing")
	obj.Spec.Secret.Labels = map[string]string{"team": "billing"}
	obj.Spec.Secret.Annotations = map[string]string{"reloader.example/match": "true"}
	create(t, obj)

	got := waitReady(t, ns, "billing", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "billing-credentials")

	secret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(secret) {
		t.Errorf("client_secret is %d characters, not 43 of unpadded base64url", len(secret))
	}
	if id := string(s.Data[m2mv1alpha1.SecretKeyClientID]); id != got.Status.ClientID || !strings.HasPrefix(id, "m2m-") {
		t.Errorf("client_id %q, status.clientID %q", id, got.Status.ClientID)
	}
	if string(s.Data[m2mv1alpha1.SecretKeyIssuer]) != testIssuer || string(s.Data[m2mv1alpha1.SecretKeyTokenURL]) != testIssuer+"/oauth2/token" {
		t.Errorf("issuer %q token_url %q", s.Data[m2mv1alpha1.SecretKeyIssuer], s.Data[m2mv1alpha1.SecretKeyTokenURL])
	}
	if s.Labels["team"] != "billing" || s.Labels["app.kubernetes.io/managed-by"] != "m2m-operator" {
		t.Errorf("labels %v", s.Labels)
	}
	if s.Annotations["reloader.example/match"] != "true" {
		t.Errorf("annotations %v", s.Annotations)
	}
	if len(got.Status.AcceptedSecrets) != 1 || !acceptedNow(got, secret) || got.Status.AcceptedSecrets[0].ExpiresAt != nil {
		t.Errorf("acceptedSecrets %+v do not accept the Secret's secret without expiry", got.Status.AcceptedSecrets)
	}
	if e := entryFor(got, secret); e == nil || e.LastFour != secret[len(secret)-4:] {
		t.Errorf("lastFour of the accepted entry is wrong: %+v", e)
	}
	if got.Status.SecretName != "billing-credentials" || got.Status.State != m2mv1alpha1.ClientStateActive || got.Status.LastRotationTime == nil {
		t.Errorf("status %+v", got.Status)
	}
	if got.Spec.TokenTTL == nil || got.Spec.TokenTTL.Duration != time.Hour || got.Spec.Rotation.GracePeriod == nil || got.Spec.Rotation.GracePeriod.Duration != time.Hour {
		t.Errorf("defaults not applied: tokenTTL %v gracePeriod %v", got.Spec.TokenTTL, got.Spec.Rotation.GracePeriod)
	}
	waitEvents(t, ns, "billing", m2mv1alpha1.EventCredentialsCreated, 1)
}

// envtest runs no garbage collector, so the test asserts the owner reference that makes the
// garbage collector delete the Secret with its client.
func TestSecretIsOwnedByItsClientForGarbageCollection(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "gc"))
	obj := waitReady(t, ns, "gc", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	ref := metav1.GetControllerOf(secretOf(t, ns, "gc-credentials"))
	if ref == nil || ref.UID != obj.UID || ref.Kind != "M2MClient" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Fatalf("controller reference %+v does not name the client %s", ref, obj.UID)
	}
}

func TestDeletedSecretIsRecreatedWithANewSecretAndTheOldOneExpiresAfterTheGracePeriod(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "recreate")
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 2 * time.Hour}
	create(t, obj)
	waitReady(t, ns, "recreate", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	old := secretOf(t, ns, "recreate-credentials")
	oldSecret := string(old.Data[m2mv1alpha1.SecretKeyClientSecret])

	deletedAt := time.Now()
	if err := env.Client.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	fresh := waitReplaced(t, old)
	newSecret := string(fresh.Data[m2mv1alpha1.SecretKeyClientSecret])
	if newSecret == oldSecret || len(newSecret) != 43 {
		t.Fatal("the recreated Secret does not carry a new secret")
	}
	got := waitReady(t, ns, "recreate", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	testenv.Eventually(t, wait, func() error {
		get(t, got)
		if e := entryFor(got, oldSecret); e == nil || e.ExpiresAt == nil {
			return fmt.Errorf("the old secret's grace period has not started: %+v", got.Status.AcceptedSecrets)
		}
		return nil
	})
	if !acceptedNow(got, newSecret) || !acceptedNow(got, oldSecret) {
		t.Fatal("both the new secret and the old one (which pods may still hold) must be accepted")
	}
	if e := entryFor(got, newSecret); e.ExpiresAt != nil {
		t.Fatal("the new secret has an expiry")
	}
	expires := entryFor(got, oldSecret).ExpiresAt.Time
	if expires.Before(deletedAt.Add(2*time.Hour-time.Minute)) || expires.After(time.Now().Add(2*time.Hour+time.Minute)) {
		t.Fatalf("the old secret expires at %s, not the grace period of 2h after the deletion at %s", expires, deletedAt)
	}
	waitEvents(t, ns, "recreate", m2mv1alpha1.EventSecretRecreated, 1)
}

func TestAStrongSecretWrittenIntoTheSecretIsAdopted(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "adopt"))
	waitReady(t, ns, "adopt", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "adopt-credentials")
	oldSecret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	imported := "imported-from-another-provider-0123456789"
	s.Data[m2mv1alpha1.SecretKeyClientSecret] = []byte(imported)
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		obj := waitReady(t, ns, "adopt", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
		if e := entryFor(obj, imported); e == nil || e.ExpiresAt != nil {
			return fmt.Errorf("the written secret is not accepted as current: %+v", obj.Status.AcceptedSecrets)
		}
		if e := entryFor(obj, oldSecret); e == nil || e.ExpiresAt == nil {
			return fmt.Errorf("the replaced secret must stay accepted with an expiry: %+v", obj.Status.AcceptedSecrets)
		}
		return nil
	})
	if got := string(secretOf(t, ns, "adopt-credentials").Data[m2mv1alpha1.SecretKeyClientSecret]); got != imported {
		t.Fatal("the manager overwrote the adopted secret")
	}
	waitEvents(t, ns, "adopt", m2mv1alpha1.EventSecretAdopted, 1)
}

func TestAWeakSecretWrittenIntoTheSecretIsRefusedAndTheOldHashesAreKept(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "weak"))
	before := waitReady(t, ns, "weak", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "weak-credentials")
	oldSecret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	s.Data[m2mv1alpha1.SecretKeyClientSecret] = []byte("hunter2")
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	obj := waitReady(t, ns, "weak", metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret)
	if !strings.Contains(obj.Status.Conditions[0].Message, "weak-credentials") || strings.Contains(obj.Status.Conditions[0].Message, "hunter2") {
		t.Errorf("message %q must name the Secret and never the secret", obj.Status.Conditions[0].Message)
	}
	if !acceptedNow(obj, oldSecret) || acceptedNow(obj, "hunter2") || len(obj.Status.AcceptedSecrets) != len(before.Status.AcceptedSecrets) {
		t.Fatalf("accepted secrets changed: %+v", obj.Status.AcceptedSecrets)
	}
	if entryFor(obj, oldSecret).ExpiresAt != nil {
		t.Fatal("the old secret was given an expiry although nothing replaced it")
	}
	if got := string(secretOf(t, ns, "weak-credentials").Data[m2mv1alpha1.SecretKeyClientSecret]); got != "hunter2" {
		t.Fatal("the manager overwrote what a person wrote")
	}
	waitEvents(t, ns, "weak", m2mv1alpha1.ReasonWeakSecret, 1)
}

func TestASecretTheOperatorDoesNotOwnIsNeverOverwritten(t *testing.T) {
	ns := namespace(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken-credentials"},
		Data:       map[string][]byte{"password": []byte("do not touch")},
	}
	create(t, foreign)
	create(t, newClient(ns, "taken"))
	obj := waitReady(t, ns, "taken", metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict)
	if !strings.Contains(obj.Status.Conditions[0].Message, "taken-credentials") {
		t.Errorf("message %q does not name the Secret", obj.Status.Conditions[0].Message)
	}
	s := secretOf(t, ns, "taken-credentials")
	if len(s.Data) != 1 || string(s.Data["password"]) != "do not touch" || len(s.OwnerReferences) != 0 || s.Labels != nil {
		t.Fatalf("the foreign Secret was changed: %v %v %v", s.Data, s.OwnerReferences, s.Labels)
	}
	if len(obj.Status.AcceptedSecrets) != 0 {
		t.Fatal("a conflicting client accepted a secret")
	}

	// Once the other Secret is gone, the client gets its own.
	if err := env.Client.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "taken", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
}

// An imported client ID stays with the namespace and name that first held it: another
// namespace's claim waits in DuplicateClientID without learning who holds it, the holder's
// deletion does not free it, a re-created holder gets it back without naming it, and only an
// administrator's deletion of the ClientIDBinding passes it on.
func TestAClientIDStaysWithItsFirstHolderAcrossDeletionUntilAnAdminReleasesIt(t *testing.T) {
	const id = "imported-client-42"
	ns1, ns2 := namespace(t), namespace(t)
	allowImports(t, ns1)
	allowImports(t, ns2)
	first := newClient(ns1, "first")
	first.Spec.ClientID = id
	create(t, first)
	waitReady(t, ns1, "first", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	binding := &m2mv1alpha1.ClientIDBinding{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: m2mv1alpha1.ClientIDBindingName(id)}, binding); err != nil || !binding.Binds(ns1, "first") || binding.Spec.ClientID != id {
		t.Fatalf("binding %+v: %v", binding.Spec, err)
	}

	second := newClient(ns2, "second")
	second.Spec.ClientID = id
	create(t, second)
	obj := waitReady(t, ns2, "second", metav1.ConditionFalse, m2mv1alpha1.ReasonDuplicateClientID)
	if obj.Status.ClientID != "" {
		t.Fatalf("the later client has status.clientID %q; the token server would see two clients", obj.Status.ClientID)
	}
	if msg := obj.Status.Conditions[0].Message; strings.Contains(msg, ns1) || strings.Contains(msg, "first") {
		t.Errorf("the message %q reveals the holder in another namespace", msg)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns2, Name: "second-credentials"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the later client got a Secret: %v", err)
	}

	// The holder goes away (a GitOps replace, a restore). The waiting client is reconciled at
	// a new generation after that and still does not get the ID.
	deleteAndWait(t, first)
	obj = bumpGeneration(t, ns2, "second")
	if got := waitReady(t, ns2, "second", metav1.ConditionFalse, m2mv1alpha1.ReasonDuplicateClientID); got.Status.ObservedGeneration != obj.Generation || got.Status.ClientID != "" {
		t.Fatalf("after the holder's deletion the squatter has status %+v", got.Status)
	}

	// The holder comes back under its namespace and name, without naming the ID, and gets it.
	create(t, newClient(ns1, "first"))
	if got := waitReady(t, ns1, "first", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady); got.Status.ClientID != id {
		t.Fatalf("the re-created holder got client ID %q, want %q", got.Status.ClientID, id)
	}

	// An administrator releases the ID: delete the holder, then its binding.
	deleteAndWait(t, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns1, Name: "first"}})
	if err := env.Client.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	obj = waitReady(t, ns2, "second", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if obj.Status.ClientID != id || string(secretOf(t, ns2, "second-credentials").Data[m2mv1alpha1.SecretKeyClientID]) != id {
		t.Fatal("the released ID did not pass to the waiting client")
	}
}

func TestLostStatusIsRebuiltFromTheSecret(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "restore"))
	before := waitReady(t, ns, "restore", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	secret := string(secretOf(t, ns, "restore-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])

	// Only the manager's identity may write status (m2m-manager-writes-status).
	asManager, err := client.New(managerConfig, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	wiped := before.DeepCopy()
	wiped.Status = m2mv1alpha1.M2MClientStatus{}
	if err := asManager.Status().Update(ctx, wiped); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		obj := waitReady(t, ns, "restore", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
		if obj.Status.ClientID != before.Status.ClientID {
			return fmt.Errorf("client ID %q, want %q", obj.Status.ClientID, before.Status.ClientID)
		}
		if len(obj.Status.AcceptedSecrets) != 1 || !acceptedNow(obj, secret) {
			return fmt.Errorf("accepted secrets %+v", obj.Status.AcceptedSecrets)
		}
		return nil
	})
	if got := string(secretOf(t, ns, "restore-credentials").Data[m2mv1alpha1.SecretKeyClientSecret]); got != secret {
		t.Fatal("recovery replaced the secret that pods hold")
	}
}

func TestADisabledClientShowsDisabledAndKeepsItsCredentials(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "off")
	obj.Spec.Disabled = true
	create(t, obj)
	got := waitReady(t, ns, "off", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if got.Status.State != m2mv1alpha1.ClientStateDisabled {
		t.Fatalf("state %q", got.Status.State)
	}
	secret := string(secretOf(t, ns, "off-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])

	got.Spec.Disabled = false
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	got = waitReady(t, ns, "off", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	if got.Status.State != m2mv1alpha1.ClientStateActive || !acceptedNow(got, secret) {
		t.Fatalf("enabling changed the credentials or state: %+v", got.Status)
	}
}

func TestSecretTemplateChangesAreAppliedAndEditsToManagedKeysAreUndone(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "tpl")
	obj.Spec.Secret.Labels = map[string]string{"keep": "1", "drop": "1"}
	create(t, obj)
	obj = waitReady(t, ns, "tpl", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)

	// Someone else's label on the Secret, and a tampered client_id.
	s := secretOf(t, ns, "tpl-credentials")
	secret := string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	s.Labels["added-by-someone"] = "yes"
	s.Data[m2mv1alpha1.SecretKeyClientID] = []byte("tampered")
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	obj.Spec.Secret.Labels = map[string]string{"keep": "2"}
	if err := env.Client.Update(ctx, obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		s := secretOf(t, ns, "tpl-credentials")
		if s.Labels["keep"] != "2" || s.Labels["drop"] != "" || s.Labels["added-by-someone"] != "yes" {
			return fmt.Errorf("labels %v", s.Labels)
		}
		if string(s.Data[m2mv1alpha1.SecretKeyClientID]) != obj.Status.ClientID {
			return fmt.Errorf("client_id %q not restored", s.Data[m2mv1alpha1.SecretKeyClientID])
		}
		if string(s.Data[m2mv1alpha1.SecretKeyClientSecret]) != secret {
			return fmt.Errorf("the secret changed")
		}
		return nil
	})
}

func TestEventsAreEmittedOnTransitionsOnly(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "quiet"))
	obj := waitReady(t, ns, "quiet", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	for i := range 3 {
		obj.Spec.Description = fmt.Sprintf("edit %d", i)
		if err := env.Client.Update(ctx, obj); err != nil {
			t.Fatal(err)
		}
		obj = waitReady(t, ns, "quiet", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	}
	if all, created := events(t, ns, "quiet", ""), events(t, ns, "quiet", m2mv1alpha1.EventCredentialsCreated); all != 1 || created != 1 {
		t.Fatalf("%d events of which %d CredentialsCreated, want just one CredentialsCreated", all, created)
	}
}

func TestTheAPIServerRejectsInvalidClients(t *testing.T) {
	ns := namespace(t)
	allowImports(t, ns)
	scopes := make([]m2mv1alpha1.Scope, 101)
	for i := range scopes {
		scopes[i] = m2mv1alpha1.Scope(fmt.Sprintf("s%d", i))
	}
	for name, tc := range map[string]struct {
		mutate func(*m2mv1alpha1.M2MClient)
		want   string
	}{
		"a scope with a space":        {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = []m2mv1alpha1.Scope{"read things"} }, "spec.scopes[0]"},
		"a scope with a double quote": {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = []m2mv1alpha1.Scope{`a"b`} }, "spec.scopes[0]"},
		"a scope with a backslash":    {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = []m2mv1alpha1.Scope{`a\b`} }, "spec.scopes[0]"},
		"a non-ASCII scope":           {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = []m2mv1alpha1.Scope{"lire:données"} }, "spec.scopes[0]"},
		"a repeated scope":            {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = []m2mv1alpha1.Scope{"a", "a"} }, "Duplicate value"},
		"101 scopes":                  {func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = scopes }, "must have at most 100 items"},
		"a token TTL under a minute":  {func(o *m2mv1alpha1.M2MClient) { o.Spec.TokenTTL = &metav1.Duration{Duration: 30 * time.Second} }, "tokenTTL must be between 1m and 24h"},
		"a token TTL over a day":      {func(o *m2mv1alpha1.M2MClient) { o.Spec.TokenTTL = &metav1.Duration{Duration: 25 * time.Hour} }, "tokenTTL must be between 1m and 24h"},
		"a token claim named iss": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"iss":"x"}`))
		}, "cannot set iss"},
		"a token claim named client_id": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"a","client_id":7}`))
		}, "cannot set client_id"},
		"a reserved claim with an object value": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"scope":{"a":1}}`))
		}, "cannot set scope"},
		"a reserved claim in upper case": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"SUB":"m2m-victim"}`))
		}, "cannot set SUB"},
		"a reserved claim in mixed case": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"Client_ID":"m2m-victim","EXP":4102444800}`))
		}, "Client_ID"},
		"a claim this server will set": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"cnf":{"jkt":"x"}}`))
		}, "cannot set cnf"},
		"65 token claims": {func(o *m2mv1alpha1.M2MClient) {
			many := m2mv1alpha1.TokenClaims{}
			for i := range 65 {
				many[fmt.Sprintf("c%d", i)] = apiextensionsv1.JSON{Raw: []byte("1")}
			}
			o.Spec.TokenClaims = many
		}, "spec.tokenClaims"},
		"a rotation period under an hour": {func(o *m2mv1alpha1.M2MClient) { o.Spec.Rotation.Period = &metav1.Duration{Duration: 30 * time.Minute} }, "rotation.period must be at least 1h"},
		"a grace period over 30 days": {func(o *m2mv1alpha1.M2MClient) {
			o.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 721 * time.Hour}
		}, "rotation.gracePeriod must be between 0s and 720h"},
		"a client ID with a slash":       {func(o *m2mv1alpha1.M2MClient) { o.Spec.ClientID = "a/b" }, "spec.clientID"},
		"a Secret name that is not DNS":  {func(o *m2mv1alpha1.M2MClient) { o.Spec.Secret.Name = "Not_DNS" }, "spec.secret.name"},
		"a name too long for the Secret": {func(o *m2mv1alpha1.M2MClient) { o.Name = strings.Repeat("a", 250) }, "too long for the default Secret name"},
	} {
		t.Run(name, func(t *testing.T) {
			obj := newClient(ns, "invalid")
			tc.mutate(obj)
			err := env.Client.Create(ctx, obj)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create error %v, want Invalid mentioning %q", err, tc.want)
			}
		})
	}

	valid := newClient(ns, "valid")
	valid.Spec.Scopes = []m2mv1alpha1.Scope{"read:things", "write:*", "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"}
	valid.Spec.TrustedMetadata = claims(`{"team":"billing","limits":{"rps":10},"tags":["a"]}`)
	valid.Spec.TokenClaims = m2mv1alpha1.TokenClaims(claims(`{"team":"billing","tier":1,"regions":["eu"]}`))
	valid.Spec.ClientID = "imported.client_id~1"
	create(t, valid)

	for name, tc := range map[string]struct {
		mutate func(*m2mv1alpha1.M2MClient)
		want   string
	}{
		"changing the client ID": {func(o *m2mv1alpha1.M2MClient) { o.Spec.ClientID = "other" }, "clientID is immutable"},
		"removing the client ID": {func(o *m2mv1alpha1.M2MClient) { o.Spec.ClientID = "" }, "clientID cannot be removed"},
		"renaming the Secret":    {func(o *m2mv1alpha1.M2MClient) { o.Spec.Secret.Name = "elsewhere" }, "spec.secret.name is immutable"},
	} {
		t.Run(name, func(t *testing.T) {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				obj := &m2mv1alpha1.M2MClient{}
				if err := env.Client.Get(ctx, client.ObjectKeyFromObject(valid), obj); err != nil {
					return err
				}
				tc.mutate(obj)
				return env.Client.Update(ctx, obj)
			})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("update error %v, want Invalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestAClientIDCanBeWrittenIntoTheSpecOnlyWithTheGeneratedValue(t *testing.T) {
	ns := namespace(t)
	create(t, newClient(ns, "pin"))
	obj := waitReady(t, ns, "pin", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)

	wrong := obj.DeepCopy()
	wrong.Spec.ClientID = "something-else"
	if err := env.Client.Update(ctx, wrong); !apierrors.IsInvalid(err) {
		t.Fatalf("adding a different client ID: %v, want Invalid", err)
	}
	obj.Spec.ClientID = obj.Status.ClientID
	if err := env.Client.Update(ctx, obj); err != nil {
		t.Fatalf("pinning the generated client ID in the spec: %v", err)
	}
	waitReady(t, ns, "pin", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
}

func claims(js string) map[string]apiextensionsv1.JSON {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(js), &raw); err != nil {
		panic(err)
	}
	out := map[string]apiextensionsv1.JSON{}
	for k, v := range raw {
		out[k] = apiextensionsv1.JSON{Raw: v}
	}
	return out
}

// Turning client secrets off removes the secret from the Secret at once and keeps its hash
// accepted for the grace period only; a client must keep some way to authenticate.
func TestAClientThatStopsTakingSecretsKeepsItsIDAndLetsTheSecretExpire(t *testing.T) {
	ns := namespace(t)
	obj := newClient(ns, "going-secretless")
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 10 * time.Minute}
	create(t, obj)
	before := waitReady(t, ns, "going-secretless", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	secret := string(secretOf(t, ns, "going-secretless-credentials").Data[m2mv1alpha1.SecretKeyClientSecret])

	base := before.DeepCopy()
	before.Spec.Authentication.ClientSecret = ptr.To(false)
	if err := env.Client.Patch(ctx, before, client.MergeFrom(base)); !apierrors.IsInvalid(err) {
		t.Fatalf("turning secrets off with no ServiceAccount: %v, want Invalid", err)
	}
	before.Spec.Authentication.ServiceAccounts = []string{"worker"}
	if err := env.Client.Patch(ctx, before, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	after := waitReady(t, ns, "going-secretless", metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady)
	s := secretOf(t, ns, "going-secretless-credentials")
	if _, ok := s.Data[m2mv1alpha1.SecretKeyClientSecret]; ok {
		t.Fatal("the Secret still carries a client secret")
	}
	if after.Status.ClientID != before.Status.ClientID || string(s.Data[m2mv1alpha1.SecretKeyClientID]) != before.Status.ClientID {
		t.Fatal("the client ID changed")
	}
	e := entryFor(after, secret)
	if e == nil || e.ExpiresAt == nil || e.ExpiresAt.After(time.Now().Add(10*time.Minute+time.Minute)) || !acceptedNow(after, secret) {
		t.Fatalf("the retired secret's entry: %+v; want accepted, expiring within the grace period", e)
	}
}
