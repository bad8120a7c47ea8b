package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// storeFieldManager is the field manager External Secrets Operator writes its Secrets with.
const storeFieldManager = "external-secrets"

// secretStore plays External Secrets Operator: the ServiceAccount external-secrets of a
// namespace of its own, which a Role and RoleBinding let write Secrets in the tenant's namespace
// only. It remembers what it wrote, so that a test can tell its writes from anyone else's.
type secretStore struct {
	c     client.Client
	key   types.NamespacedName
	entry string
	// forClient is the client its template names in the source's opt-in annotation.
	forClient string
	// values and versions are the values it wrote, in order, and the resourceVersions its
	// writes made.
	values   []string
	versions map[string]bool
}

func newSecretStore(t *testing.T, ns, name, entry, forClient string) *secretStore {
	t.Helper()
	ctx := context.Background()
	home := namespace(t)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "external-secrets"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}}}}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "external-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: home, Name: "external-secrets"}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + home + ":external-secrets",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + home, "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	// The store's rights end at the tenant's namespace: not even its own is writable.
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: home, Name: "probe"}}
	if err := c.Create(ctx, probe, client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Fatalf("the store wrote a Secret outside the tenant's namespace: %v", err)
	}
	return &secretStore{c: c, key: types.NamespacedName{Namespace: ns, Name: name}, entry: entry, forClient: forClient, versions: map[string]bool{}}
}

// write puts value into the source, as the store's sync does: it creates the Secret, or
// replaces its data. A write by anyone else since the store's last one is a conflict, and fails
// the test.
func (s *secretStore) write(t *testing.T, value string) {
	t.Helper()
	ctx := context.Background()
	cur := &corev1.Secret{}
	err := s.c.Get(ctx, s.key, cur)
	switch {
	case apierrors.IsNotFound(err):
		cur = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.key.Namespace, Name: s.key.Name,
			Annotations: map[string]string{m2mv1alpha1.SourceForAnnotation: s.forClient}},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{s.entry: []byte(value)}}
		err = s.c.Create(ctx, cur, client.FieldOwner(storeFieldManager))
	case err == nil:
		if len(s.versions) > 0 && !s.versions[cur.ResourceVersion] {
			t.Fatalf("the source is at resourceVersion %s, which the store did not write", cur.ResourceVersion)
		}
		cur.Data = map[string][]byte{s.entry: []byte(value)}
		err = s.c.Update(ctx, cur, client.FieldOwner(storeFieldManager))
	}
	if err != nil {
		t.Fatal(err)
	}
	s.values = append(s.values, value)
	s.versions[cur.ResourceVersion] = true
}

// wrote reports whether the store wrote a value whose fingerprint, for kind, is hash.
func (s *secretStore) wrote(kind credentials.Kind, hash string) bool {
	for _, v := range s.values {
		if kind.Fingerprint(v) == hash {
			return true
		}
	}
	return false
}

// storeKey is a P-256 private key in PKCS #8 PEM, as a store holds one.
func storeKey(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// waitReason waits until obj's Ready condition has reason, and returns obj as it is then.
func waitReason(t *testing.T, obj *m2mv1alpha1.M2MClient, reason string) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady); c == nil || c.Reason != reason {
			return fmt.Errorf("Ready is %+v, want reason %s", c, reason)
		}
		return nil
	})
}

// carried waits until the client's credentials Secret carries value under key, and returns it.
func carried(t *testing.T, obj *m2mv1alpha1.M2MClient, key, value string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: obj.Namespace, Name: obj.Name + "-credentials"}, s); err != nil {
			return err
		}
		if string(s.Data[key]) != value {
			return fmt.Errorf("the credentials Secret does not carry the store's latest value yet")
		}
		return nil
	})
	return s
}

// inGrace checks that status accepts previous (of kind) only until an expiry still ahead: the
// previous credential is in its grace period, not accepted for good.
func inGrace(t *testing.T, obj *m2mv1alpha1.M2MClient, kind credentials.Kind, previous string) {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	for _, e := range obj.Status.AcceptedSecrets {
		if e.Hash == kind.Fingerprint(previous) {
			if e.ExpiresAt == nil || !e.ExpiresAt.After(time.Now()) {
				t.Fatalf("the previous credential's entry expires at %v: not in a grace period now", e.ExpiresAt)
			}
			return
		}
	}
	t.Fatal("status no longer accepts the previous credential")
}

// A client whose secret External Secrets Operator writes (spec.authentication.source): while a
// pod that follows the client's credentials Secret (mounted, refreshed as the kubelet does, read
// by pkg/m2mauth) asks for tokens all along, the store writes the first value and then two new
// ones. No request of the pod is refused; each new value works, and the one before it keeps
// working for the grace period. The manager never writes the source (every version of it is one
// of the store's writes, and only the store's field manager appears in it), issues no
// credential of its own (every hash status ever accepted is of a value the store wrote; no
// CredentialsCreated before the source existed), and copies a value into the credentials Secret
// only once status accepts it.
func TestASecretStoreRotatesTheCredentialUnderLoadAndNoPodReadingTheCredentialsSecretIsRefused(t *testing.T) {
	const (
		kubeletDelay = time.Second
		grace        = 20 * time.Second
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := namespace(t)
	record, err := testenv.RecordCredentials(ctx, env.Config, ns)
	if err != nil {
		t.Fatal(err)
	}
	store := newSecretStore(t, ns, "billing-from-vault", m2mv1alpha1.SecretKeyClientSecret, "stored")
	obj := billingClient(ns, "stored")
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: "billing-from-vault"}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: grace}
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	kind := credentials.ClientSecret{}

	// Before the store's first sync the client waits, with nothing of the manager's.
	waitReason(t, obj, m2mv1alpha1.ReasonSourceSecretMissing)
	if n := len(obj.Status.AcceptedSecrets); n != 0 {
		t.Fatalf("status accepts %d credentials before the source exists", n)
	}
	if n, err := testenv.CountEvents(ctx, env.Client, ns, "M2MClient", obj.Name, m2mv1alpha1.EventCredentialsCreated); err != nil || n != 0 {
		t.Fatalf("%d CredentialsCreated events before the source exists (%v)", n, err)
	}
	early := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stored-credentials"}, early); err == nil && len(early.Data[m2mv1alpha1.SecretKeyClientSecret]) != 0 {
		t.Fatal("the credentials Secret carries a client_secret before the source exists")
	}

	store.write(t, testenv.NewSecret(t))
	waitReason(t, obj, m2mv1alpha1.ReasonCredentialsReady)
	s := carried(t, obj, m2mv1alpha1.SecretKeyClientSecret, store.values[0])
	if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) {
		t.Fatal("the Ready client's credentials Secret does not carry the store's value")
	}
	id := obj.Status.ClientID

	dir := t.TempDir()
	writeVolume(t, dir, s)
	var mu sync.Mutex
	projected := map[string]bool{}
	kubelet := startConsumer(kubeletDelay, func() error {
		cur := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), cur); err != nil {
			return err
		}
		mu.Lock()
		projected[kind.Fingerprint(string(cur.Data[m2mv1alpha1.SecretKeyClientSecret]))] = true
		mu.Unlock()
		return volume.Project(dir, cur.Data)
	})
	// RefreshBefore the whole lifetime: every call asks the token server.
	ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.RefreshBefore(obj.Spec.TokenTTL.Duration))
	if err != nil {
		t.Fatal(err)
	}
	pod := startConsumer(10*time.Millisecond, func() error {
		_, err := ts.Token()
		return err
	})

	for range 2 {
		previous := store.values[len(store.values)-1]
		next := testenv.NewSecret(t)
		store.write(t, next)
		now := carried(t, obj, m2mv1alpha1.SecretKeyClientSecret, next)
		testenv.Eventually(t, wait, func() error { return tokenWith(now, m2mv1alpha1.SecretKeyClientSecret, next) })
		inGrace(t, obj, kind, previous)
		if err := tokenWith(now, m2mv1alpha1.SecretKeyClientSecret, previous); err != nil {
			t.Fatalf("the previous value in its grace period: %v", err)
		}
		// Let the pod's volume follow before the next write.
		time.Sleep(2 * kubeletDelay)
	}
	pod.stop()
	kubelet.stop()
	if pod.failed.Load() != 0 || pod.ok.Load() == 0 {
		t.Fatalf("%d of %d token requests of the pod reading the credentials Secret failed; first: %v", pod.failed.Load(), pod.failed.Load()+pod.ok.Load(), pod.firstErr.Load())
	}
	t.Logf("%d token requests of the pod reading the credentials Secret across the store's rotations, none failed", pod.ok.Load())
	for i, v := range store.values {
		if !projected[kind.Fingerprint(v)] {
			t.Fatalf("the pod's volume never held the store's value %d: the test did not exercise the rotation", i)
		}
	}
	// Once its grace period is over, the first value is refused.
	refusedEventually(t, s, m2mv1alpha1.SecretKeyClientSecret, store.values[0])

	secrets, clients := record()
	var mine []testenv.Version
	sourceVersions := 0
	for _, v := range secrets {
		switch v.Object.GetName() {
		case "stored-credentials":
			mine = append(mine, v)
		case store.key.Name:
			sourceVersions++
			if !store.versions[v.Object.GetResourceVersion()] {
				t.Errorf("the source has a version %s that the store did not write", v.Object.GetResourceVersion())
			}
			for _, f := range v.Object.GetManagedFields() {
				if f.Manager != storeFieldManager {
					t.Errorf("field manager %q wrote the source", f.Manager)
				}
			}
		}
	}
	if sourceVersions != len(store.values) {
		t.Errorf("%d versions of the source recorded, for %d writes of the store", sourceVersions, len(store.values))
	}
	for _, v := range clients {
		for _, e := range v.Object.(*m2mv1alpha1.M2MClient).Status.AcceptedSecrets {
			if !store.wrote(kind, e.Hash) {
				t.Fatalf("version %d of the client's status accepts a credential (last four %q) that the store never wrote", v.RV, e.LastFour)
			}
		}
	}
	checked, err := testenv.AcceptedBefore(mine, clients, func(o client.Object, secret string) bool {
		for _, e := range o.(*m2mv1alpha1.M2MClient).Status.AcceptedSecrets {
			if e.Hash == kind.Fingerprint(secret) {
				return true
			}
		}
		return false
	})
	if err != nil || checked < len(store.values) {
		t.Fatalf("checked %d versions of the credentials Secret: %v", checked, err)
	}
	if n, err := testenv.CountEvents(ctx, env.Client, ns, "M2MClient", obj.Name, m2mv1alpha1.EventCredentialsCreated); err != nil || n != 1 {
		t.Fatalf("%d CredentialsCreated events, want the one of the store's first value (%v)", n, err)
	}
	if id != obj.Status.ClientID {
		t.Fatal("the client ID changed across the store's rotations")
	}
}

// refusals counts what a pod that mounts the source itself sees of one value of the store.
type refusals struct {
	refused           int
	first, firstToken time.Time
	gotToken          bool
}

// A pod that mounts the source Secret itself (the anti-pattern the docs warn of), rather than
// the client's credentials Secret, sends the store's new value as soon as the store writes it:
// the token server refuses it until the manager has accepted it, and then issues tokens for it
// again. The test records how long that window lasted; it asserts only that it ends.
func TestAPodReadingTheSourceDirectlyIsRefusedUntilTheManagerAcceptsTheNewValue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := namespace(t)
	store := newSecretStore(t, ns, "billing-from-vault", m2mv1alpha1.SecretKeyClientSecret, "direct")
	store.write(t, testenv.NewSecret(t))
	obj := billingClient(ns, "direct")
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: "billing-from-vault"}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 0}
	s := readyClient(t, obj)
	kind := credentials.ClientSecret{}

	var mu sync.Mutex
	seen := map[string]*refusals{}
	pod := startConsumer(10*time.Millisecond, func() error {
		src := &corev1.Secret{}
		if err := env.Client.Get(ctx, store.key, src); err != nil {
			return err
		}
		value := string(src.Data[m2mv1alpha1.SecretKeyClientSecret])
		start := time.Now()
		err := tokenWith(s, m2mv1alpha1.SecretKeyClientSecret, value)
		if err != nil && !invalidClient(err) {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		r := seen[kind.Fingerprint(value)]
		if r == nil {
			r = &refusals{first: start}
			seen[kind.Fingerprint(value)] = r
		}
		switch {
		case err != nil && !r.gotToken:
			r.refused++
		case err != nil:
			return fmt.Errorf("a value refused after it got a token: %w", err)
		case !r.gotToken:
			r.gotToken, r.firstToken = true, time.Now()
		}
		return nil
	})
	got := func(value string) error {
		mu.Lock()
		defer mu.Unlock()
		if r := seen[kind.Fingerprint(value)]; r == nil || !r.gotToken {
			return fmt.Errorf("the pod has no token for the store's latest value yet")
		}
		return nil
	}
	testenv.Eventually(t, wait, func() error { return got(store.values[0]) })
	for i := range 5 {
		store.write(t, testenv.NewSecret(t))
		written := time.Now()
		latest := store.values[len(store.values)-1]
		testenv.Eventually(t, wait, func() error { return got(latest) })
		mu.Lock()
		r := seen[kind.Fingerprint(latest)]
		t.Logf("rotation %d: the pod reading the source was refused %d times; %v from its first request with the new value, %v from the store's write, to its first token",
			i+1, r.refused, r.firstToken.Sub(r.first).Round(time.Millisecond), r.firstToken.Sub(written).Round(time.Millisecond))
		mu.Unlock()
	}
	pod.stop()
	if pod.failed.Load() != 0 {
		t.Fatalf("%d requests failed other than with invalid_client; first: %v", pod.failed.Load(), pod.firstErr.Load())
	}
}

// A key pair whose private key the store writes: once the client is Ready, the key signs
// private_key_jwt assertions the token server accepts, through the credentials Secret as a pod
// mounts it and sent directly; after the store writes a new key, both keys are accepted during
// the grace period.
func TestAPrivateKeyFromASecretStoreSignsAssertionsAndTheReplacedKeyStaysAcceptedDuringTheGracePeriod(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	store := newSecretStore(t, ns, "signer-key", m2mv1alpha1.SecretKeyPrivateKey, "signer")
	store.write(t, storeKey(t))
	obj := billingClient(ns, "signer")
	obj.Spec.Authentication.KeyPair = &m2mv1alpha1.KeyPairPolicy{}
	obj.Spec.Authentication.Source = &m2mv1alpha1.CredentialSource{Name: "signer-key"}
	obj.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 30 * time.Second}
	s := readyClient(t, obj)
	id := obj.Status.ClientID
	kind := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}
	first := store.values[0]
	if string(s.Data[m2mv1alpha1.SecretKeyPrivateKey]) != first {
		t.Fatal("the credentials Secret does not carry the store's private key")
	}
	testenv.Eventually(t, wait, func() error {
		ts, err := m2mauth.NewTokenSource(ctx, mount(t, s))
		if err != nil {
			return err
		}
		_, err = ts.Token()
		return err
	})
	assertion := func(key, jti string) error {
		if code, body := postToken(t, "application/x-www-form-urlencoded", assertionRequest(id, keyAssertion(t, []byte(key), id, "", jti), nil)); code != http.StatusOK {
			return fmt.Errorf("%d %v", code, body)
		}
		return nil
	}
	if err := assertion(first, "first-key"); err != nil {
		t.Fatalf("an assertion signed with the store's key: %v", err)
	}

	store.write(t, storeKey(t))
	second := store.values[1]
	carried(t, obj, m2mv1alpha1.SecretKeyPrivateKey, second)
	testenv.Eventually(t, wait, func() error { return assertion(second, fmt.Sprint("second-", time.Now().UnixNano())) })
	inGrace(t, obj, kind, first)
	if err := assertion(first, "first-key-in-grace"); err != nil {
		t.Fatalf("an assertion signed with the previous key in its grace period: %v", err)
	}
}
