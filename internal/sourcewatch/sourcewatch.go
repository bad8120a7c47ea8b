// Package sourcewatch watches the Secrets that M2MClients name as the source of their credential
// (spec.authentication.source), each one by its name. A secret store writes them without the
// manager's label, so the manager's cache, which holds only labelled Secrets, never sees them; a
// watch of every Secret would hold every Secret of the cluster in the manager's memory. A watch
// per named source costs one API server watch and a few goroutines, holds that Secret alone,
// stripped to the one entry the client reads, and ends when no client names it any more.
package sourcewatch

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// Source is a named source: an entry of a Secret.
type Source struct {
	Namespace, Name, Key string
}

// String is "namespace/name" and the key, for messages.
func (s Source) String() string {
	return fmt.Sprintf("Secret %s/%s, entry %q", s.Namespace, s.Name, s.Key)
}

// Reading is what a source holds, as last seen.
type Reading struct {
	// Synced: the watch has listed the source once; until then the rest says nothing.
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

// Watcher keeps one watch per source that some client names. It is a manager Runnable that
// needs the leader: only the leader reconciles, and so only it names sources.
type Watcher struct {
	// ListWatch lists and watches the Secrets of a namespace that a field selector chooses.
	ListWatch func(namespace string, selector fields.Selector) cache.ListerWatcher
	// Notify is told the clients whose source changed, or was first read.
	Notify func(client types.NamespacedName)
	// PerNamespace bounds the distinct sources of one namespace, so that one tenant cannot make
	// the manager hold any number of watches; 0 means no bound.
	PerNamespace int
	// MaxValueBytes bounds the entry the watcher keeps in memory.
	MaxValueBytes int
	// ManagedBy is the label (name and value) that marks the manager's own Secrets.
	ManagedByLabel, ManagedByValue string
	// OptInAnnotation is the annotation by which a Secret names the clients that may read it.
	OptInAnnotation string
	// ClientGroup and ClientKind name the M2MClient kind, whose controller reference marks a
	// client's credentials Secret.
	ClientGroup, ClientKind string

	mu      sync.Mutex
	ctx     context.Context
	sources map[Source]*watch
	wants   map[types.NamespacedName]Source
}

type watch struct {
	store   cache.Store
	run     cache.Controller
	stop    context.CancelFunc
	holders map[types.NamespacedName]struct{}
}

// sizeAnnotation carries, on the stripped copy in the store only, the size of an entry that was
// over the limit and dropped.
const sizeAnnotation = "sourcewatch.m2m.dev/size"

// ErrTooManySources is Want's error for a namespace at the PerNamespace bound.
type ErrTooManySources struct {
	Namespace string
	Limit     int
}

func (e *ErrTooManySources) Error() string {
	return fmt.Sprintf("namespace %s already has %d sources, the most the manager watches for one namespace (--max-sources-per-namespace); clients that share a source share its watch", e.Namespace, e.Limit)
}

// Start runs the watches until ctx ends, and starts those named before.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	for src, s := range w.sources {
		w.startLocked(src, s)
	}
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	for src, s := range w.sources {
		if s.stop != nil {
			s.stop()
		}
		delete(w.sources, src)
	}
	w.wants = nil
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (w *Watcher) NeedLeaderElection() bool { return true }

// Want records that client reads src (and no longer any source it read before), starting src's
// watch if it has none, and returns what src holds. A namespace at the PerNamespace bound gets
// ErrTooManySources for a source it does not watch yet.
func (w *Watcher) Want(client types.NamespacedName, src Source) (Reading, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sources == nil {
		w.sources, w.wants = map[Source]*watch{}, map[types.NamespacedName]Source{}
	}
	if old, ok := w.wants[client]; ok && old != src {
		// First, so that a namespace at the bound may move a client to another source.
		w.releaseLocked(client)
	}
	s, ok := w.sources[src]
	if !ok {
		if w.PerNamespace > 0 && w.countLocked(src.Namespace) >= w.PerNamespace {
			return Reading{}, &ErrTooManySources{Namespace: src.Namespace, Limit: w.PerNamespace}
		}
		s = &watch{holders: map[types.NamespacedName]struct{}{}}
		w.sources[src] = s
		if w.ctx != nil {
			w.startLocked(src, s)
		}
	}
	s.holders[client] = struct{}{}
	w.wants[client] = src
	return w.readLocked(src, s), nil
}

// Release records that client reads no source (it was deleted, or names none any more).
func (w *Watcher) Release(client types.NamespacedName) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(client)
}

// Watches is the number of sources watched, for the manager's metrics.
func (w *Watcher) Watches() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sources)
}

func (w *Watcher) countLocked(namespace string) int {
	n := 0
	for src := range w.sources {
		if src.Namespace == namespace {
			n++
		}
	}
	return n
}

func (w *Watcher) releaseLocked(client types.NamespacedName) {
	src, ok := w.wants[client]
	if !ok {
		return
	}
	delete(w.wants, client)
	s := w.sources[src]
	delete(s.holders, client)
	if len(s.holders) == 0 {
		if s.stop != nil {
			s.stop()
		}
		delete(w.sources, src)
	}
}

func (w *Watcher) readLocked(src Source, s *watch) Reading {
	if s.run == nil || !s.run.HasSynced() {
		return Reading{}
	}
	item, exists, err := s.store.GetByKey(src.Namespace + "/" + src.Name)
	if err != nil || !exists {
		return Reading{Synced: true}
	}
	secret := item.(*corev1.Secret)
	r := Reading{Synced: true, Exists: true, WrittenByManager: secret.Labels[w.ManagedByLabel] == w.ManagedByValue || w.controlledByClient(secret),
		OptIn: secret.Annotations[w.OptInAnnotation]}
	if n, err := strconv.Atoi(secret.Annotations[sizeAnnotation]); err == nil {
		r.Size = n
		return r
	}
	r.Value = string(secret.Data[src.Key])
	r.Size = len(r.Value)
	return r
}

// controlledByClient reports whether secret's controller is an M2MClient, of the group that
// ClientGroup names.
func (w *Watcher) controlledByClient(secret *corev1.Secret) bool {
	ref := metav1.GetControllerOf(secret)
	if ref == nil {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err != nil || (gv.Group == w.ClientGroup && ref.Kind == w.ClientKind)
}

// startLocked starts the watch of src, whose events tell its holders.
func (w *Watcher) startLocked(src Source, s *watch) {
	ctx, stop := context.WithCancel(w.ctx)
	notify := func(any) { w.notify(src) }
	s.store, s.run = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: w.ListWatch(src.Namespace, fields.OneTermEqualSelector("metadata.name", src.Name)),
		ObjectType:    &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    notify,
			UpdateFunc: func(_, o any) { notify(o) },
			DeleteFunc: notify,
		},
		Transform: w.strip(src.Key),
	})
	s.stop = stop
	go s.run.RunWithContext(ctx)
	go func() {
		// The first list of a source that does not exist delivers no event; its holders wait for
		// one.
		if cache.WaitForCacheSync(ctx.Done(), s.run.HasSynced) {
			w.notify(src)
		}
	}()
}

// notify tells src's holders, outside the lock: Notify may block on a full queue.
func (w *Watcher) notify(src Source) {
	w.mu.Lock()
	var holders []types.NamespacedName
	if s, ok := w.sources[src]; ok {
		for h := range s.holders {
			holders = append(holders, h)
		}
	}
	w.mu.Unlock()
	for _, h := range holders {
		w.Notify(h)
	}
}

// strip keeps of a Secret what a Reading needs: its name, the managed-by label, the opt-in
// annotation, its controller and the entry key, dropped (with its size noted) when over MaxValueBytes. The rest (other
// entries, annotations such as kubectl's last-applied copy of the data, managed fields) never
// reaches the store.
func (w *Watcher) strip(key string) cache.TransformFunc {
	return func(o any) (any, error) {
		in, ok := o.(*corev1.Secret)
		if !ok {
			return o, nil // a tombstone: the store drops its object either way
		}
		out := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: in.Namespace, Name: in.Name, UID: in.UID, ResourceVersion: in.ResourceVersion,
		}}
		if v, ok := in.Labels[w.ManagedByLabel]; ok {
			out.Labels = map[string]string{w.ManagedByLabel: v}
		}
		if ref := metav1.GetControllerOf(in); ref != nil {
			out.OwnerReferences = []metav1.OwnerReference{*ref}
		}
		if v := in.Annotations[w.OptInAnnotation]; w.OptInAnnotation != "" && v != "" && len(v) <= maxOptInBytes {
			out.Annotations = map[string]string{w.OptInAnnotation: v}
		}
		v, ok := in.Data[key]
		if n, noted := in.Annotations[sizeAnnotation]; noted && !ok {
			// The informer may strip a copy it stripped before (against a real API server, the
			// note of a 1 MiB entry was lost so, and the entry read as absent): the note is all
			// that is left of the entry then.
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[sizeAnnotation] = n
		}
		if ok {
			if w.MaxValueBytes > 0 && len(v) > w.MaxValueBytes {
				if out.Annotations == nil {
					out.Annotations = map[string]string{}
				}
				out.Annotations[sizeAnnotation] = strconv.Itoa(len(v))
			} else {
				out.Data = map[string][]byte{key: v}
			}
		}
		return out, nil
	}
}
