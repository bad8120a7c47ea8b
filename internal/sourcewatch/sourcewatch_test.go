package sourcewatch

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What the watcher keeps of a source in memory: the one entry a client reads, and nothing that
// could carry another secret (other entries, kubectl's last-applied copy of the data).
func TestTheStoreKeepsTheNamedEntryAlone(t *testing.T) {
	w := &Watcher{MaxValueBytes: 16, ManagedByLabel: "app.kubernetes.io/managed-by", ManagedByValue: "m2m-operator", OptInAnnotation: "m2m.dev/source-for"}
	in := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "from-vault", ResourceVersion: "7",
			Labels:      map[string]string{"reconcile.external-secrets.io/managed": "true"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: `{"data":{"other":"c2VjcmV0"}}`, "m2m.dev/source-for": "billing"}},
		Data: map[string][]byte{"client_secret": []byte("value"), "other": []byte("secret")},
	}
	got, err := w.strip("client_secret")(in)
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*corev1.Secret)
	if len(out.Data) != 1 || string(out.Data["client_secret"]) != "value" || len(out.Annotations) != 1 || out.Annotations["m2m.dev/source-for"] != "billing" || len(out.Labels) != 0 {
		t.Fatalf("kept %v, annotations %v, labels %v; want the client_secret entry and the opt-in alone", out.Data, out.Annotations, out.Labels)
	}
}

func TestAnEntryOverTheLimitIsDroppedAndItsSizeNoted(t *testing.T) {
	w := &Watcher{MaxValueBytes: 16}
	in := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "big"}, Data: map[string][]byte{"k": []byte(strings.Repeat("x", 17))}}
	got, _ := w.strip("k")(in)
	out := got.(*corev1.Secret)
	if len(out.Data) != 0 || out.Annotations[sizeAnnotation] != "17" {
		t.Fatalf("kept %d entries, size note %q; want none and 17", len(out.Data), out.Annotations[sizeAnnotation])
	}
}

// The informer may pass a stripped copy through strip again; the size note must survive it, or
// an entry over the limit would read as an absent one.
func TestStrippingAStrippedCopyKeepsTheSizeNote(t *testing.T) {
	w := &Watcher{MaxValueBytes: 16}
	in := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "big"}, Data: map[string][]byte{"k": []byte(strings.Repeat("x", 17))}}
	once, _ := w.strip("k")(in)
	twice, _ := w.strip("k")(once)
	if out := twice.(*corev1.Secret); len(out.Data) != 0 || out.Annotations[sizeAnnotation] != "17" {
		t.Fatalf("after a second strip: %d entries, size note %q; want none and 17", len(out.Data), out.Annotations[sizeAnnotation])
	}
}

// A namespace at the bound gets no new watch, but may move a client from one source to
// another, and other namespaces are not affected.
func TestTheBoundOfSourcesIsPerNamespace(t *testing.T) {
	w := &Watcher{PerNamespace: 2}
	a, b, c := types.NamespacedName{Namespace: "t", Name: "a"}, types.NamespacedName{Namespace: "t", Name: "b"}, types.NamespacedName{Namespace: "t", Name: "c"}
	want := func(client types.NamespacedName, ns, name string) error {
		_, err := w.Want(client, Source{Namespace: ns, Name: name, Key: "client_secret"})
		return err
	}
	if err := want(a, "t", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := want(b, "t", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := want(c, "t", "s1"); err != nil {
		t.Fatalf("a client sharing a watched source was refused: %v", err)
	}
	if err := want(c, "t", "s3"); err == nil {
		t.Fatal("a third source in a namespace bounded to two was watched")
	}
	if err := want(types.NamespacedName{Namespace: "u", Name: "x"}, "u", "s1"); err != nil {
		t.Fatalf("another namespace was refused: %v", err)
	}
	if err := want(b, "t", "s4"); err != nil {
		t.Fatalf("a client moving to another source in a namespace at its bound was refused: %v", err)
	}
	// c, refused s3, holds no source any more; a was s1's last holder.
	w.Release(a)
	if w.Watches() != 2 {
		t.Fatalf("%d watches after s1's last holder let go; want s4 and u's", w.Watches())
	}
}

// External Secrets Operator (creationPolicy Owner) and Sealed Secrets make their own object the
// controller of the Secret they write, and other stores may: that Secret is a store's, the
// one a source is for. Only a controller that is an M2MClient marks a credentials Secret.
func TestOnlyAnM2MClientAsControllerMakesASecretTheManagers(t *testing.T) {
	w := &Watcher{ClientGroup: "m2m.dev", ClientKind: "M2MClient"}
	controlled := func(apiVersion, kind string) *corev1.Secret {
		yes := true
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{
			{APIVersion: apiVersion, Kind: kind, Name: "billing", UID: "u", Controller: &yes},
		}}}
	}
	for _, store := range []*corev1.Secret{
		controlled("external-secrets.io/v1", "ExternalSecret"),
		controlled("bitnami.com/v1alpha1", "SealedSecret"),
		controlled("secrets.hashicorp.com/v1beta1", "VaultStaticSecret"),
		{},
	} {
		if w.controlledByClient(store) {
			t.Errorf("a Secret controlled by %v is taken for a credentials Secret", store.OwnerReferences)
		}
	}
	if !w.controlledByClient(controlled("m2m.dev/v1alpha1", "M2MClient")) {
		t.Error("a Secret controlled by an M2MClient is taken for a store's")
	}
}
