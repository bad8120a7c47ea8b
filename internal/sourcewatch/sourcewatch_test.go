package sourcewatch

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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// What the watcher keeps of a source: the one entry a client reads and the opt-in, and nothing
// that could carry another secret (other entries, kubectl's last-applied copy of the data).
func TestAReadingKeepsTheNamedEntryAndTheOptInAlone(t *testing.T) {
	w := &Watcher{MaxValueBytes: 16, ManagedByLabel: "app.kubernetes.io/managed-by", ManagedByValue: "m2m-operator", OptInAnnotation: "m2m.dev/source-for"}
	in := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "from-vault", ResourceVersion: "7",
			Labels:      map[string]string{"reconcile.external-secrets.io/managed": "true"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: `{"data":{"other":"c2VjcmV0"}}`, "m2m.dev/source-for": "billing"}},
		Data: map[string][]byte{"client_secret": []byte("value"), "other": []byte("secret")},
	}
	want := Reading{Synced: true, Exists: true, Value: "value", Size: 5, OptIn: "billing"}
	if got, ok := w.read(in, []string{"client_secret"}).reading("client_secret"); !ok || got != want {
		t.Fatalf("read %+v, want %+v", got, want)
	}
}

func TestAnEntryOverTheLimitIsDroppedAndItsSizeKept(t *testing.T) {
	w := &Watcher{MaxValueBytes: 16, OptInAnnotation: "m2m.dev/source-for"}
	in := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"m2m.dev/source-for": strings.Repeat("c,", maxOptInBytes)}},
		Data: map[string][]byte{"k": []byte(strings.Repeat("x", 17))}}
	if got, _ := w.read(in, []string{"k"}).reading("k"); got.Value != "" || got.Size != 17 || got.OptIn != "" {
		t.Fatalf("read value %q, size %d, opt-in of %d bytes; want none, 17, and none (over its bound)", got.Value, got.Size, len(got.OptIn))
	}
}

// The metadata watch keeps a Secret's name and version alone: annotations, labels and managed
// fields, which a tenant can pad, never reach the store.
func TestTheMetadataStoreKeepsNameAndVersionAlone(t *testing.T) {
	in := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "s", ResourceVersion: "9",
		Annotations:   map[string]string{"pad": strings.Repeat("x", 1000)},
		Labels:        map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	got, _ := strip(in)
	out := got.(*metav1.PartialObjectMetadata)
	if out.Name != "s" || out.ResourceVersion != "9" || out.Annotations != nil || out.Labels != nil || out.ManagedFields != nil {
		t.Fatalf("kept %+v", out.ObjectMeta)
	}
}

// fakeAPI serves the metadata of a namespace's Secrets and GETs of them, and counts the GETs.
type fakeAPI struct {
	mu      sync.Mutex
	secrets map[types.NamespacedName]*corev1.Secret
	gets    int
	watcher *watch.FakeWatcher
}

// listOnly is a ListWatch that says it serves no watch-list (a list, then a watch), as a fake
// must for client-go's reflector.
type listOnly struct{ *cache.ListWatch }

func (listOnly) IsWatchListSemanticsUnSupported() bool { return true }

func (f *fakeAPI) listWatch(namespace string) cache.ListerWatcher {
	return listOnly{&cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			list := &metav1.PartialObjectMetadataList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
			for k, s := range f.secrets {
				if k.Namespace == namespace {
					list.Items = append(list.Items, metav1.PartialObjectMetadata{ObjectMeta: s.ObjectMeta})
				}
			}
			return list, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			return f.watcher, nil
		},
	}}
}

func (f *fakeAPI) get(_ context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	s, ok := f.secrets[key]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	return s.DeepCopy(), nil
}

func (f *fakeAPI) getCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

// started is a watcher on api, started, and a channel of the clients it wakes.
func started(t *testing.T, api *fakeAPI, perNamespace int) (*Watcher, chan types.NamespacedName) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	woken := make(chan types.NamespacedName, 100)
	w := &Watcher{ListWatch: api.listWatch, Get: api.get, Notify: func(c types.NamespacedName) { woken <- c }, PerNamespace: perNamespace, MaxValueBytes: 4096}
	done := make(chan struct{})
	go func() { _ = w.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, woken
}

// wantSynced asks for src until the namespace's watch has listed it.
func wantSynced(t *testing.T, w *Watcher, woken chan types.NamespacedName, client types.NamespacedName, src Source) Reading {
	t.Helper()
	r, err := w.Want(context.Background(), client, src)
	for err == nil && !r.Synced {
		<-woken
		r, err = w.Want(context.Background(), client, src)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A source is read with a GET once per version of its Secret: a reconcile that finds it as it
// was reads nothing, and a change, which wakes its clients, is read again.
func TestASourceIsReadOncePerVersion(t *testing.T) {
	key := types.NamespacedName{Namespace: "team", Name: "from-vault"}
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{
		key: {ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "from-vault", ResourceVersion: "5"}, Data: map[string][]byte{"client_secret": []byte("v1")}},
	}}
	w, woken := started(t, api, 0)
	client, src := types.NamespacedName{Namespace: "team", Name: "billing"}, Source{Namespace: "team", Name: "from-vault", Key: "client_secret"}
	if r := wantSynced(t, w, woken, client, src); r.Value != "v1" {
		t.Fatalf("read %+v", r)
	}
	if r := wantSynced(t, w, woken, client, src); r.Value != "v1" || api.getCount() != 1 {
		t.Fatalf("read %+v with %d GETs; want v1 from the first GET alone", r, api.getCount())
	}
	api.mu.Lock()
	changed := api.secrets[key].DeepCopy()
	changed.ResourceVersion, changed.Data["client_secret"] = "6", []byte("v2")
	api.secrets[key] = changed
	api.mu.Unlock()
	api.watcher.Modify(&metav1.PartialObjectMetadata{ObjectMeta: changed.ObjectMeta})
	for c := range woken {
		if c == client {
			break
		}
	}
	if r := wantSynced(t, w, woken, client, src); r.Value != "v2" || api.getCount() != 2 {
		t.Fatalf("read %+v with %d GETs after the change; want v2 from a second GET", r, api.getCount())
	}
}

// A namespace at the bound reads no new source, but may move a client from one source to
// another, and other namespaces are not affected; one watch serves each namespace, and it ends
// with its last source.
func TestTheBoundOfSourcesIsPerNamespace(t *testing.T) {
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{}}
	w, _ := started(t, api, 2)
	a, b, c := types.NamespacedName{Namespace: "t", Name: "a"}, types.NamespacedName{Namespace: "t", Name: "b"}, types.NamespacedName{Namespace: "t", Name: "c"}
	want := func(client types.NamespacedName, ns, name string) error {
		_, err := w.Want(context.Background(), client, Source{Namespace: ns, Name: name, Key: "client_secret"})
		return err
	}
	if err := want(a, "t", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := want(b, "t", "s2"); err != nil {
		t.Fatal(err)
	}
	if err := want(c, "t", "s1"); err != nil {
		t.Fatalf("a client sharing a source was refused: %v", err)
	}
	if err := want(c, "t", "s3"); err == nil {
		t.Fatal("a third source in a namespace bounded to two was read")
	}
	if err := want(types.NamespacedName{Namespace: "u", Name: "x"}, "u", "s1"); err != nil {
		t.Fatalf("another namespace was refused: %v", err)
	}
	if err := want(b, "t", "s4"); err != nil {
		t.Fatalf("a client moving to another source in a namespace at its bound was refused: %v", err)
	}
	if ns, sources := w.Watches(); ns != 2 || sources != 3 {
		t.Fatalf("%d namespaces and %d sources, want t (s1, s4) and u (s1)", ns, sources)
	}
	// c, refused s3, holds no source any more; a was s1's last holder.
	w.Release(a)
	w.Release(b)
	if ns, sources := w.Watches(); ns != 1 || sources != 1 {
		t.Fatalf("%d namespaces and %d sources after t's last clients let go; want u's alone", ns, sources)
	}
}

// A reconcile that runs while the manager stops gets an error, not a panic or a watch on a
// cancelled context.
func TestWantAfterTheWatcherStoppedIsRefused(t *testing.T) {
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{}}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{ListWatch: api.listWatch, Get: api.get, Notify: func(types.NamespacedName) {}}
	done := make(chan struct{})
	go func() { _ = w.Start(ctx); close(done) }()
	if _, err := w.Want(context.Background(), types.NamespacedName{Namespace: "t", Name: "a"}, Source{Namespace: "t", Name: "s"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := w.Want(context.Background(), types.NamespacedName{Namespace: "t", Name: "b"}, Source{Namespace: "t", Name: "s"}); err != ErrStopped {
		t.Fatalf("Want after stop: %v, want ErrStopped", err)
	}
	w.Release(types.NamespacedName{Namespace: "t", Name: "a"})
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

// changeVersion gives the Secret of key a new resourceVersion, and waits until the watch has
// delivered it (a client is woken after the store holds it).
func changeVersion(t *testing.T, api *fakeAPI, woken chan types.NamespacedName, key types.NamespacedName, version string) {
	t.Helper()
	api.mu.Lock()
	changed := api.secrets[key].DeepCopy()
	changed.ResourceVersion = version
	api.secrets[key] = changed
	api.mu.Unlock()
	api.watcher.Modify(&metav1.PartialObjectMetadata{ObjectMeta: changed.ObjectMeta})
	<-woken
}

// A Secret named by many clients under different keys costs one GET per write, not one per key:
// a tenant who writes one padded Secret in a loop must not make the manager read it whole for
// each of its clients.
func TestOneWriteOfASecretCostsOneGetWhateverTheKeysItsClientsRead(t *testing.T) {
	key := types.NamespacedName{Namespace: "team", Name: "padded"}
	const keys = 64
	data := map[string][]byte{}
	for i := range keys {
		data[fmt.Sprintf("k%d", i)] = []byte("v")
	}
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{
		key: {ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "padded", ResourceVersion: "5"}, Data: data},
	}}
	w, woken := started(t, api, 0)
	wantAll := func() {
		for i := range keys {
			if r := wantSynced(t, w, woken, types.NamespacedName{Namespace: "team", Name: fmt.Sprintf("c%d", i)},
				Source{Namespace: "team", Name: "padded", Key: fmt.Sprintf("k%d", i)}); r.Value != "v" {
				t.Fatalf("client %d read %+v", i, r)
			}
		}
	}
	wantAll()
	changeVersion(t, api, woken, key, "6")
	before := api.getCount()
	wantAll()
	if got := api.getCount() - before; got != 1 {
		t.Fatalf("one write of the Secret cost %d GETs for its %d keys; want 1", got, keys)
	}
}

// Reconciles that find the same Secret changed at once share one GET of it.
func TestReconcilesThatFindASourceChangedAtOnceShareOneGet(t *testing.T) {
	key := types.NamespacedName{Namespace: "team", Name: "s"}
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{
		key: {ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "s", ResourceVersion: "5"}, Data: map[string][]byte{"k": []byte("v")}},
	}}
	w, woken := started(t, api, 0)
	src := Source{Namespace: "team", Name: "s", Key: "k"}
	for i := range 8 {
		wantSynced(t, w, woken, types.NamespacedName{Namespace: "team", Name: fmt.Sprintf("c%d", i)}, src)
	}
	// A slow API server, so that the reconciles overlap (were they not to, the cached reading
	// would serve the later ones, and the count would be 1 too).
	get := w.Get
	w.mu.Lock()
	w.Get = func(ctx context.Context, k types.NamespacedName) (*corev1.Secret, error) {
		time.Sleep(50 * time.Millisecond)
		return get(ctx, k)
	}
	w.mu.Unlock()
	changeVersion(t, api, woken, key, "6")
	before := api.getCount()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := w.Want(context.Background(), types.NamespacedName{Namespace: "team", Name: fmt.Sprintf("c%d", i)}, src); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := api.getCount() - before; got != 1 {
		t.Fatalf("8 reconciles of one changed source made %d GETs; want 1", got)
	}
}

// A client that moves between sources of its namespace keeps the namespace's watch: each move
// would otherwise list every Secret of the namespace again.
func TestMovingBetweenSourcesOfANamespaceDoesNotListItAgain(t *testing.T) {
	api := &fakeAPI{watcher: watch.NewFake(), secrets: map[types.NamespacedName]*corev1.Secret{}}
	lists := 0
	inner := api.listWatch
	api2 := func(ns string) cache.ListerWatcher {
		lw := inner(ns).(listOnly)
		return listOnly{&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				api.mu.Lock()
				lists++
				api.mu.Unlock()
				return lw.ListWithContextFunc(ctx, o)
			},
			WatchFuncWithContext: lw.WatchFuncWithContext,
		}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	woken := make(chan types.NamespacedName, 100)
	w := &Watcher{ListWatch: api2, Get: api.get, Notify: func(c types.NamespacedName) { woken <- c }}
	done := make(chan struct{})
	go func() { _ = w.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	c := types.NamespacedName{Namespace: "t", Name: "a"}
	for i := range 20 {
		wantSynced(t, w, woken, c, Source{Namespace: "t", Name: "s", Key: fmt.Sprintf("k%d", i%2)})
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if lists != 1 {
		t.Fatalf("20 moves of one client listed the namespace's Secrets %d times; want 1", lists)
	}
}
