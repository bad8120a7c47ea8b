// Package sourcewatch tells the manager what the Secrets that M2MClients name as the source of
// their credential (spec.authentication.source) hold, and wakes those clients when one changes.
//
// A secret store writes these Secrets without the manager's label, so the manager's cache, which
// holds only labelled Secrets, never sees them, and a cache of every Secret would hold every
// Secret of the cluster. Nor does a watch per source scale: client-go decodes each watch event
// whole before any transform runs, and each watch keeps decode buffers as large as the largest
// object it has seen, so a tenant with one padded Secret named by many clients held the manager
// hostage (about 4 MiB per watch for a 900 KiB Secret). Instead, each namespace that has a
// source gets one watch of the metadata of its Secrets (the API server leaves the data out),
// which says when a source changes; the source itself is read with a GET when its
// resourceVersion differs from the one last read, and only the entry its clients read is kept.
package sourcewatch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"golang.org/x/sync/singleflight"
)

// Source is a named source: an entry of a Secret.
type Source struct {
	Namespace, Name, Key string
}

// String names the Secret and its entry, for messages.
func (s Source) String() string {
	return fmt.Sprintf("Secret %s/%s, entry %q", s.Namespace, s.Name, s.Key)
}

// Reading is what a source holds, as last seen.
type Reading struct {
	// Synced: the namespace's watch has listed its Secrets once; until then the rest says
	// nothing.
	Synced bool
	// Exists: the Secret exists.
	Exists bool
	// Value is the entry's value, "" when the entry is absent, empty or over the size limit.
	Value string
	// Size is the entry's size in bytes; over the limit, Value is "" and Size says how large.
	Size int
	// WrittenByManager: the Secret carries the manager's managed-by label or is controlled by
	// an M2MClient (a client's credentials Secret): not a store's. A controller of another kind
	// is a store's own object (External Secrets Operator's ExternalSecret with creationPolicy
	// Owner, a SealedSecret), which a source is for.
	WrittenByManager bool
	// OptIn is the value of the Secret's OptInAnnotation ("" when absent or over
	// maxOptInBytes).
	OptIn string
}

// maxOptInBytes bounds the opt-in annotation kept in memory: a list of client names.
const maxOptInBytes = 4 << 10

// ErrStopped is Want's error once the watcher has stopped (the manager shuts down or lost the
// lease): nothing would tell the client of a change any more.
var ErrStopped = errors.New("the source watcher has stopped")

// ErrTooManySources is Want's error for a namespace at the PerNamespace bound.
type ErrTooManySources struct {
	Namespace string
	Limit     int
}

func (e *ErrTooManySources) Error() string {
	return fmt.Sprintf("namespace %s already has %d sources (distinct Secret entries), the most the manager reads for one namespace (--max-sources-per-namespace); clients that name the same entry share it", e.Namespace, e.Limit)
}

// Watcher keeps one metadata watch per namespace that has a source, and the last reading of each
// source. It is a manager Runnable that needs the leader: only the leader reconciles, and so only
// it names sources.
type Watcher struct {
	// ListWatch lists and watches the metadata (PartialObjectMetadata) of the Secrets of a
	// namespace.
	ListWatch func(namespace string) cache.ListerWatcher
	// Get reads a Secret from the API server.
	Get func(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error)
	// Notify is told the clients whose source changed, or whose namespace was first listed.
	Notify func(client types.NamespacedName)
	// PerNamespace bounds the distinct sources of one namespace, whose readings the watcher
	// keeps; 0 means no bound.
	PerNamespace int
	// MaxValueBytes bounds the entry kept of a source.
	MaxValueBytes int
	// ManagedByLabel and ManagedByValue are the label that marks the manager's own Secrets.
	ManagedByLabel, ManagedByValue string
	// OptInAnnotation is the annotation by which a Secret names the clients that may read it.
	OptInAnnotation string
	// ClientGroup and ClientKind name the M2MClient kind, whose controller reference marks a
	// client's credentials Secret.
	ClientGroup, ClientKind string

	mu         sync.Mutex
	ctx        context.Context
	stopped    bool
	namespaces map[string]*namespaceWatch
	wants      map[types.NamespacedName]Source
	// readings are the last reading of each Secret that sources name, for all the keys its
	// clients read: one GET serves them all.
	readings map[types.NamespacedName]*secretReading
	// reads makes the reconciles that find a Secret changed at once share one GET of it.
	reads singleflight.Group
}

// namespaceWatch is the metadata watch of one namespace's Secrets, and who reads which.
type namespaceWatch struct {
	store cache.Store
	run   cache.Controller
	stop  context.CancelFunc
	// holders are the clients that read each source of the namespace.
	holders map[Source]map[types.NamespacedName]struct{}
}

// secretReading is what a Secret held at a resourceVersion, for the keys its clients read.
type secretReading struct {
	version          string
	writtenByManager bool
	optIn            string
	// entries hold the value ("" over the size bound) and size of each key read.
	entries map[string]entry
}

type entry struct {
	value string
	size  int
}

// reading is r as a Reading of key, and whether r read key at all.
func (r *secretReading) reading(key string) (Reading, bool) {
	e, ok := r.entries[key]
	return Reading{Synced: true, Exists: true, WrittenByManager: r.writtenByManager, OptIn: r.optIn, Value: e.value, Size: e.size}, ok
}

// Start runs the watches until ctx ends, and starts those asked for before.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	for ns, nw := range w.namespaces {
		w.startLocked(ns, nw)
	}
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for _, nw := range w.namespaces {
		if nw.stop != nil {
			nw.stop()
		}
	}
	w.namespaces, w.wants, w.readings = nil, nil, nil
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (w *Watcher) NeedLeaderElection() bool { return true }

// Want records that client reads src (and no longer any source it read before), starting the
// watch of src's namespace if it has none, and returns what src holds, read with Get when the
// Secret changed since it was last read. A namespace at the PerNamespace bound gets
// ErrTooManySources for a source it does not read yet.
func (w *Watcher) Want(ctx context.Context, client types.NamespacedName, src Source) (Reading, error) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return Reading{}, ErrStopped
	}
	if w.namespaces == nil {
		w.namespaces, w.wants, w.readings = map[string]*namespaceWatch{}, map[types.NamespacedName]Source{}, map[types.NamespacedName]*secretReading{}
	}
	if old, ok := w.wants[client]; ok && old != src {
		// First, so that a namespace at the bound may move a client to another source; a move
		// within the namespace keeps its watch, which would otherwise list it all again.
		w.releaseLocked(client, old.Namespace == src.Namespace)
	}
	nw := w.namespaces[src.Namespace]
	if nw == nil {
		nw = &namespaceWatch{holders: map[Source]map[types.NamespacedName]struct{}{}}
	}
	if _, ok := nw.holders[src]; !ok {
		if w.PerNamespace > 0 && len(nw.holders) >= w.PerNamespace {
			w.stopIdleLocked(src.Namespace)
			w.mu.Unlock()
			return Reading{}, &ErrTooManySources{Namespace: src.Namespace, Limit: w.PerNamespace}
		}
		nw.holders[src] = map[types.NamespacedName]struct{}{}
	}
	if w.namespaces[src.Namespace] == nil {
		w.namespaces[src.Namespace] = nw
		if w.ctx != nil {
			w.startLocked(src.Namespace, nw)
		}
	}
	nw.holders[src][client] = struct{}{}
	w.wants[client] = src
	if nw.run == nil || !nw.run.HasSynced() {
		w.mu.Unlock()
		return Reading{}, nil
	}
	secretKey := types.NamespacedName{Namespace: src.Namespace, Name: src.Name}
	version := ""
	if item, exists, err := nw.store.GetByKey(secretKey.String()); err == nil && exists {
		version = item.(*metav1.PartialObjectMetadata).ResourceVersion
	}
	if version == "" {
		w.mu.Unlock()
		return Reading{Synced: true}, nil
	}
	if last := w.readings[secretKey]; last != nil && last.version == version {
		if r, ok := last.reading(src.Key); ok {
			w.mu.Unlock()
			return r, nil
		}
	}
	w.mu.Unlock()

	read := func() (any, error) { return w.readSecret(ctx, secretKey) }
	v, err, _ := w.reads.Do(secretKey.String()+"@"+version, read)
	if err == nil {
		if r, ok := v.(*secretReading).reading(src.Key); ok {
			return r, nil
		}
		// A GET another reconcile started before this client's key was wanted.
		v, err = read()
	}
	switch {
	case apierrors.IsNotFound(err):
		// Deleted since the watch said it exists; its delete event wakes the clients again.
		return Reading{Synced: true}, nil
	case err != nil:
		return Reading{}, err
	}
	r, _ := v.(*secretReading).reading(src.Key)
	return r, nil
}

// readSecret GETs the Secret of key and keeps, as its reading, the keys its clients read.
func (w *Watcher) readSecret(ctx context.Context, key types.NamespacedName) (*secretReading, error) {
	secret, err := w.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.read(secret, w.keysLocked(key))
	if len(r.entries) > 0 {
		w.readings[key] = r
	}
	return r, nil
}

// keysLocked are the keys that clients read of the Secret of key.
func (w *Watcher) keysLocked(key types.NamespacedName) []string {
	var keys []string
	if nw := w.namespaces[key.Namespace]; nw != nil {
		for src := range nw.holders {
			if src.Name == key.Name {
				keys = append(keys, src.Key)
			}
		}
	}
	return keys
}

// Release records that client reads no source (it was deleted, or names none any more).
func (w *Watcher) Release(client types.NamespacedName) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(client, false)
}

// Watches is the number of namespaces watched, and Sources the number of sources read.
func (w *Watcher) Watches() (namespaces, sources int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, nw := range w.namespaces {
		sources += len(nw.holders)
	}
	return len(w.namespaces), sources
}

// releaseLocked forgets client's source, its reading once no client reads the Secret, and the
// namespace's watch once it has no source, unless keepWatch.
func (w *Watcher) releaseLocked(client types.NamespacedName, keepWatch bool) {
	src, ok := w.wants[client]
	if !ok {
		return
	}
	delete(w.wants, client)
	nw := w.namespaces[src.Namespace]
	delete(nw.holders[src], client)
	if len(nw.holders[src]) > 0 {
		return
	}
	delete(nw.holders, src)
	secretKey := types.NamespacedName{Namespace: src.Namespace, Name: src.Name}
	if len(w.keysLocked(secretKey)) == 0 {
		delete(w.readings, secretKey)
	}
	if !keepWatch {
		w.stopIdleLocked(src.Namespace)
	}
}

// stopIdleLocked stops the watch of namespace when no source of it is read.
func (w *Watcher) stopIdleLocked(namespace string) {
	nw := w.namespaces[namespace]
	if nw == nil || len(nw.holders) > 0 {
		return
	}
	if nw.stop != nil {
		nw.stop()
	}
	delete(w.namespaces, namespace)
}

// read keeps of secret what Readings of keys need: each entry (its size alone when over
// MaxValueBytes), the opt-in annotation, and whether the manager writes it.
func (w *Watcher) read(secret *corev1.Secret, keys []string) *secretReading {
	r := &secretReading{version: secret.ResourceVersion, entries: map[string]entry{},
		writtenByManager: (w.ManagedByLabel != "" && secret.Labels[w.ManagedByLabel] == w.ManagedByValue) || w.controlledByClient(secret)}
	if v := secret.Annotations[w.OptInAnnotation]; w.OptInAnnotation != "" && len(v) <= maxOptInBytes {
		r.optIn = v
	}
	for _, key := range keys {
		v := secret.Data[key]
		e := entry{size: len(v)}
		if w.MaxValueBytes <= 0 || len(v) <= w.MaxValueBytes {
			e.value = string(v)
		}
		r.entries[key] = e
	}
	return r
}

// controlledByClient reports whether secret's controller is an M2MClient: a client's credentials
// Secret.
func (w *Watcher) controlledByClient(secret *corev1.Secret) bool {
	ref := metav1.GetControllerOf(secret)
	if ref == nil {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return true // unreadable: treat as the manager's, which refuses the source
	}
	return gv.Group == w.ClientGroup && ref.Kind == w.ClientKind
}

// startLocked starts the metadata watch of namespace, whose events wake the clients of the
// source they concern.
func (w *Watcher) startLocked(namespace string, nw *namespaceWatch) {
	ctx, stop := context.WithCancel(w.ctx)
	changed := func(o any) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if m, ok := o.(metav1.Object); ok {
			w.notify(namespace, func(src Source) bool { return src.Name == m.GetName() })
		}
	}
	nw.store, nw.run = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: w.ListWatch(namespace),
		ObjectType:    &metav1.PartialObjectMetadata{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    changed,
			UpdateFunc: func(_, o any) { changed(o) },
			DeleteFunc: changed,
		},
		Transform: strip,
	})
	nw.stop = stop
	go nw.run.RunWithContext(ctx)
	go func() {
		// The first list delivers no event for a source that does not exist; its clients wait
		// for one.
		if cache.WaitForCacheSync(ctx.Done(), nw.run.HasSynced) {
			w.notify(namespace, func(Source) bool { return true })
		}
	}()
}

// notify tells the clients of namespace's sources that match, outside the lock: Notify may
// block on a full queue.
func (w *Watcher) notify(namespace string, match func(Source) bool) {
	w.mu.Lock()
	var clients []types.NamespacedName
	if nw, ok := w.namespaces[namespace]; ok {
		for src, holders := range nw.holders {
			if match(src) {
				for c := range holders {
					clients = append(clients, c)
				}
			}
		}
	}
	w.mu.Unlock()
	for _, c := range clients {
		w.Notify(c)
	}
}

// strip keeps of a Secret's metadata its name and resourceVersion: what says that it changed.
// Annotations, labels and managed fields, which a tenant can make large, never reach the store.
func strip(o any) (any, error) {
	in, ok := o.(*metav1.PartialObjectMetadata)
	if !ok {
		return o, nil // a tombstone: the store drops its object either way
	}
	return &metav1.PartialObjectMetadata{TypeMeta: in.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Namespace: in.Namespace, Name: in.Name, UID: in.UID, ResourceVersion: in.ResourceVersion,
	}}, nil
}

// SecretMetadata lists and watches the metadata of a namespace's Secrets through mc, as
// client-go's metadata informer does (watch-list where the API server offers it): the ListWatch a
// Watcher needs.
func SecretMetadata(mc metadata.Interface) func(namespace string) cache.ListerWatcher {
	secrets := corev1.SchemeGroupVersion.WithResource("secrets")
	return func(namespace string) cache.ListerWatcher {
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				return mc.Resource(secrets).Namespace(namespace).List(ctx, opts)
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				return mc.Resource(secrets).Namespace(namespace).Watch(ctx, opts)
			},
		}, mc)
	}
}
