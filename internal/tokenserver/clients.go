package tokenserver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/undecodable"
)

// ClientSource finds M2MClients by client ID.
type ClientSource interface {
	// Candidates returns the live clients whose status.clientID is id: one, unless someone wrote
	// another's ID into a status, which the server tells apart by the status MAC. The returned
	// slice and objects are shared and must not be modified.
	Candidates(id string) []*CachedClient
}

// Refresher is a ClientSource that can read one client past its cache, while the cache may be
// behind the API server.
type Refresher interface {
	// Refresh returns client as the API server has it, if that is what accepts says yes to; nil
	// when the cache is not behind, when reads past it are used up for now, when the read fails,
	// or when accepts says no.
	Refresh(ctx context.Context, client *CachedClient, accepts func(*CachedClient) bool) *CachedClient
}

// Reads past the cache, for secrets it refuses while it may be behind (Refresh).
const (
	// refreshWindow is how long after a watch error the cache counts as behind: a watch that
	// reconnects after an API-server restart may be refused (410) and list again only after the
	// reflector's backoff, which grows to 30 s. Meanwhile the manager, if it catches up first,
	// can put into Secrets secrets whose hashes this cache has not seen.
	refreshWindow = 2 * time.Minute
	// refreshRate and refreshBurst bound the reads past the cache for everyone together, so that
	// wrong secrets cannot turn into load on the API server. A read serves a client's requests
	// for refreshReuse while it accepts them, and a client is read again at most every
	// refreshEvery: a thousand clients rotated at once while the cache is behind cost about a
	// thousand reads, a hundred a second.
	refreshRate    = 100
	refreshBurst   = 200
	refreshReuse   = 10 * time.Second
	refreshEvery   = time.Second
	refreshTimeout = 2 * time.Second
	// watchGap is how long after a watch ended another may start as a routine renewal (the
	// API server ends watches every few minutes, and the reflector watches again at once); a
	// longer gap means the API server was away.
	watchGap = time.Second
)

// InformerClients is a ClientSource backed by informers on M2MClients: one per watched
// namespace, or one for the whole cluster. It never reads Secrets.
type InformerClients struct {
	informers []toolscache.SharedIndexInformer
	clock     clock.PassiveClock

	// byID holds the cached clients by status.clientID, kept by an event handler of each
	// informer (indexed), which is told every add, update and delete of its informer in order,
	// relists included. A list is replaced, never modified, so that Candidates can hand it out.
	// byKey is what byID holds by namespace and name: a delete may come with only those (the
	// stub of a deleted or undecodable object, which names no client ID, or one other than the
	// indexed version's), and must still remove what was indexed.
	byIDMu  sync.RWMutex
	byID    map[string][]*CachedClient
	byKey   map[clientKey]*CachedClient
	indexed []toolscache.ResourceEventHandlerRegistration
	// arrival is called with each new version of a client before it is indexed
	// (VerifyOnArrival).
	arrival func(*CachedClient)

	// Staleness tracking: the time of the last message from the API server (an object event or a
	// bookmark), and how many watch streams are open right now.
	lastMessage atomic.Int64 // unix nanoseconds
	openWatches atomic.Int64

	// Reads past the cache (Refresh): the client, when a watch last failed (Unix nanoseconds),
	// and the limits.
	reader         client.Reader
	lastWatchError atomic.Int64
	// lastWatchEnd is when a watch last ended (Unix nanoseconds): a watch that starts well after
	// one ended follows a gap (the API server was away), which the reflector retried without
	// calling its watch error handler.
	lastWatchEnd atomic.Int64
	refreshLimit *rate.Limiter
	refreshedMu  sync.Mutex
	refreshed    map[types.UID]refreshed

	// watches opens the watches, which decode M2MClients without client-go's unstructured step.
	watches *clientWatch

	// undecodable holds the namespace/name of the objects left out because they do not decode.
	undecodableMu sync.Mutex
	undecodable   map[string]struct{}
}

// NewInformerClients prepares informers; Start runs them.
func NewInformerClients(cfg *rest.Config, namespaces []string, clk clock.PassiveClock) (*InformerClients, error) {
	// The token server reads M2MClients only: a scheme with nothing else, and no dependency on
	// the manager's packages.
	scheme := runtime.NewScheme()
	if err := m2mv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	s := &InformerClients{clock: clk}
	server, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	// An object nested as deeply as a decoder allows decodes on its own but fails the LIST or
	// watch event around it, and with it every other client: the filter leaves it out. The
	// per-object decode below deals with every other object that does not decode.
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &undecodable.Filter{
			Base:       rt,
			PathPrefix: undecodable.PathPrefix(server.Path, m2mv1alpha1.GroupVersion),
			Resource:   "m2mclients",
			Report:     s.leftOut,
		}
	})
	// One HTTP client, and so one connection pool, for the LISTs, the reads past the cache and
	// the watches.
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme, HTTPClient: httpClient})
	if err != nil {
		return nil, err
	}
	s.watches = &clientWatch{client: httpClient, base: server}
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	s.reader, s.refreshLimit = c, rate.NewLimiter(refreshRate, refreshBurst)
	s.lastMessage.Store(clk.Now().UnixNano())
	for _, ns := range namespaces {
		inf := toolscache.NewSharedIndexInformer(s.listWatch(c, ns), &m2mv1alpha1.M2MClient{}, 0, toolscache.Indexers{})
		// Only the fields the token server reads are worth their memory.
		if err := inf.SetTransform(cacheable); err != nil {
			return nil, err
		}
		reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.index(obj, false) },
			UpdateFunc: func(_, cur any) { s.index(cur, false) },
			DeleteFunc: func(obj any) { s.index(obj, true) },
		})
		if err != nil {
			return nil, err
		}
		s.indexed = append(s.indexed, reg)
		if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *toolscache.Reflector, err error) {
			s.lastWatchError.Store(s.clock.Now().UnixNano())
			toolscache.DefaultWatchErrorHandler(ctx, r, err)
		}); err != nil {
			return nil, err
		}
		s.informers = append(s.informers, inf)
	}
	return s, nil
}

// listWatch lists and watches M2MClients as unstructured objects and decodes them one at a time,
// so that one object that does not decode (a status time that passed the API server's format
// check but not metav1.Time's, say) is left out of the cache instead of failing every LIST and
// WATCH: a token server would otherwise never become ready, or serve a cache that no longer
// changes, for every namespace. Such an object is removed, not kept at its last good version, so
// that an administrator's disabled: true that arrives with a poisoned status takes effect.
func (s *InformerClients) listWatch(c client.WithWatch, ns string) *toolscache.ListWatch {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			raw := &unstructured.UnstructuredList{}
			raw.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClientList"))
			listed := map[string]bool{} // the objects of this LIST, those the filter left out too
			if err := c.List(context.WithValue(ctx, listedKey{}, listed), raw, &client.ListOptions{Namespace: ns, Raw: &opts}); err != nil {
				return nil, err
			}
			s.touch()
			list := &m2mv1alpha1.M2MClientList{}
			list.ResourceVersion, list.Continue = raw.GetResourceVersion(), raw.GetContinue()
			list.Items = make([]m2mv1alpha1.M2MClient, 0, len(raw.Items))
			for i := range raw.Items {
				listed[raw.Items[i].GetNamespace()+"/"+raw.Items[i].GetName()] = true
				if obj, ok := s.decode(ctx, &raw.Items[i]); ok {
					list.Items = append(list.Items, *obj)
				}
			}
			if opts.Continue == "" && list.Continue == "" {
				s.forgetUndecodable(ns, listed) // a whole LIST, not one page of it
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := s.watches.open(ctx, ns, opts)
			if err != nil {
				return nil, err
			}
			s.touch()
			// A watch that starts with every object's initial event (client-go's watch-list
			// mode, which replaces the LIST) is a whole LIST too, up to its end bookmark.
			initial := opts.SendInitialEvents != nil && *opts.SendInitialEvents
			return s.observe(ctx, w, ns, initial), nil
		},
	}
}

// listedKey is the context key of the objects a LIST named, left out by the filter or not.
type listedKey struct{}

// leftOut records an object the filter left out of an answer (too deeply nested to decode within
// it); a LIST's context collects its key, so that the LIST does not forget it as deleted.
func (s *InformerClients) leftOut(ctx context.Context, o undecodable.Object) {
	key := o.Namespace + "/" + o.Name
	if listed, ok := ctx.Value(listedKey{}).(map[string]bool); ok {
		listed[key] = true
	}
	s.markUndecodable(key, true)
	log.FromContext(ctx).Error(o.Err, "an M2MClient does not decode; it gets no tokens until it is fixed", "namespace", o.Namespace, "name", o.Name)
}

// decode turns u into an M2MClient, or reports (log, and the set of undecodable clients) why it
// cannot and returns false.
func (s *InformerClients) decode(ctx context.Context, u *unstructured.Unstructured) (*m2mv1alpha1.M2MClient, bool) {
	key := u.GetNamespace() + "/" + u.GetName()
	obj := &m2mv1alpha1.M2MClient{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		s.markUndecodable(key, true)
		log.FromContext(ctx).Error(err, "an M2MClient does not decode; it gets no tokens until it is fixed", "namespace", u.GetNamespace(), "name", u.GetName())
		return nil, false
	}
	s.markUndecodable(key, false)
	return obj, true
}

// markUndecodable records whether the object of key (namespace/name) does not decode.
func (s *InformerClients) markUndecodable(key string, bad bool) {
	s.undecodableMu.Lock()
	defer s.undecodableMu.Unlock()
	if bad {
		if s.undecodable == nil {
			s.undecodable = map[string]struct{}{}
		}
		s.undecodable[key] = struct{}{}
	} else {
		delete(s.undecodable, key)
	}
}

// forgetUndecodable forgets the undecodable objects of namespace ns ("" for all) that a LIST no
// longer has (deleted while no watch was open).
func (s *InformerClients) forgetUndecodable(ns string, listed map[string]bool) {
	s.undecodableMu.Lock()
	defer s.undecodableMu.Unlock()
	for key := range s.undecodable {
		if (ns == "" || strings.HasPrefix(key, ns+"/")) && !listed[key] {
			delete(s.undecodable, key)
		}
	}
}

// Undecodable is how many M2MClients are left out of the cache because they do not decode.
func (s *InformerClients) Undecodable() int {
	s.undecodableMu.Lock()
	defer s.undecodableMu.Unlock()
	return len(s.undecodable)
}

func (s *InformerClients) touch() { s.lastMessage.Store(s.clock.Now().UnixNano()) }

// observe passes a watch of namespace ns through, decoding each object (an object that does not
// decode becomes the deletion of its namespace and name) and noting every message (bookmarks
// included) and whether the stream is open. When the watch starts with initial events, the
// undecodable objects those events no longer name are forgotten at their end.
func (s *InformerClients) observe(ctx context.Context, w watch.Interface, ns string, initial bool) watch.Interface {
	o := &observedWatch{inner: w, out: make(chan watch.Event), done: make(chan struct{})}
	var listed map[string]bool
	if initial {
		listed = map[string]bool{}
	}
	now := s.clock.Now()
	if end := s.lastWatchEnd.Load(); end != 0 && now.Sub(time.Unix(0, end)) > watchGap {
		s.lastWatchError.Store(now.UnixNano()) // the cache may be behind for a while yet
	}
	s.openWatches.Add(1)
	go func() {
		defer close(o.out)
		defer s.lastWatchEnd.Store(s.clock.Now().UnixNano())
		defer s.openWatches.Add(-1)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				s.touch()
				if listed != nil {
					listed = s.noteInitial(ev, ns, listed)
				}
				select {
				case o.out <- s.typed(ctx, ev):
				case <-o.done:
					return
				}
			case <-o.done:
				return
			}
		}
	}()
	return o
}

// noteInitial notes the object of an initial event in listed, and at the bookmark that ends the
// initial events forgets the undecodable objects of ns not in listed; it returns nil once done.
func (s *InformerClients) noteInitial(ev watch.Event, ns string, listed map[string]bool) map[string]bool {
	m, err := meta.Accessor(ev.Object)
	if err != nil {
		return listed
	}
	switch ev.Type {
	case watch.Added:
		listed[m.GetNamespace()+"/"+m.GetName()] = true
	case watch.Deleted:
		if m.GetAnnotations()[undecodable.LeftOutAnnotation] == undecodable.LeftOutValue {
			listed[m.GetNamespace()+"/"+m.GetName()] = true // left out by the filter, still stored
		}
	case watch.Bookmark:
		if m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
			s.forgetUndecodable(ns, listed)
			return nil
		}
	}
	return listed
}

// typed is ev with its object decoded. An object that does not decode is deleted from the cache.
func (s *InformerClients) typed(ctx context.Context, ev watch.Event) watch.Event {
	// A deleted client goes to the handlers whole, when it decodes: the revocation list
	// (InformerRevocations.clientDeleted) reads its client ID. The filter's stub of an object it
	// left out is still stored, and stays counted as undecodable.
	if c, ok := ev.Object.(*m2mv1alpha1.M2MClient); ok {
		// Decoded as it came (clientWatch), as decode would have.
		if ev.Type == watch.Deleted && c.Annotations[undecodable.LeftOutAnnotation] == undecodable.LeftOutValue {
			return watch.Event{Type: watch.Deleted, Object: goneStub(c.Namespace, c.Name, c.ResourceVersion)}
		}
		s.markUndecodable(c.Namespace+"/"+c.Name, false)
		return ev
	}
	u, ok := ev.Object.(*unstructured.Unstructured)
	if !ok {
		return ev // an error's *metav1.Status
	}
	gone := goneStub(u.GetNamespace(), u.GetName(), u.GetResourceVersion())
	if ev.Type == watch.Deleted {
		if u.GetAnnotations()[undecodable.LeftOutAnnotation] == undecodable.LeftOutValue {
			return watch.Event{Type: watch.Deleted, Object: gone}
		}
		s.markUndecodable(u.GetNamespace()+"/"+u.GetName(), false)
		obj := &m2mv1alpha1.M2MClient{}
		if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj) == nil {
			return watch.Event{Type: watch.Deleted, Object: obj}
		}
		return watch.Event{Type: watch.Deleted, Object: gone}
	}
	if obj, ok := s.decode(ctx, u); ok {
		return watch.Event{Type: ev.Type, Object: obj}
	}
	return watch.Event{Type: watch.Deleted, Object: gone}
}

// goneStub is what the cache is told of an object it is to drop without its content: its
// namespace, name and resourceVersion.
func goneStub(namespace, name, resourceVersion string) *m2mv1alpha1.M2MClient {
	return &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, ResourceVersion: resourceVersion}}
}

type observedWatch struct {
	inner watch.Interface
	out   chan watch.Event
	done  chan struct{}
	once  sync.Once
}

func (o *observedWatch) Stop() {
	o.once.Do(func() {
		close(o.done)
		o.inner.Stop()
	})
}

func (o *observedWatch) ResultChan() <-chan watch.Event { return o.out }

// VerifyOnArrival has each new version of a client verified (its status MACs, under the status
// keys of keys at that moment) before requests can find it. Call it before Start.
func (s *InformerClients) VerifyOnArrival(keys KeySource) {
	s.arrival = func(c *CachedClient) {
		if st := keys.current(); st != nil {
			c.verdictsUnder(st.status)
		}
	}
}

// Start runs the informers until ctx ends.
func (s *InformerClients) Start(ctx context.Context) {
	for _, inf := range s.informers {
		go inf.RunWithContext(ctx)
	}
}

// Synced reports whether every informer has listed once and the client IDs of what it listed
// are indexed. It stays true when the API server goes away later: the cache keeps serving what
// it has.
func (s *InformerClients) Synced() bool {
	for _, reg := range s.indexed {
		if !reg.HasSynced() {
			return false
		}
	}
	return true
}

// WaitForSync blocks until Synced or ctx ends.
func (s *InformerClients) WaitForSync(ctx context.Context) error {
	fns := make([]toolscache.InformerSynced, 0, len(s.indexed))
	for _, reg := range s.indexed {
		fns = append(fns, reg.HasSynced)
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), fns...) {
		return fmt.Errorf("the M2MClient cache did not sync: %w", ctx.Err())
	}
	return nil
}

// Staleness is how far behind the API server the cache may be: zero while a watch stream is
// open, else the time since the last message from the API server.
func (s *InformerClients) Staleness() time.Duration {
	if s.openWatches.Load() >= int64(len(s.informers)) {
		return 0
	}
	return s.clock.Since(time.Unix(0, s.lastMessage.Load()))
}

// Count is the number of cached clients.
func (s *InformerClients) Count() int {
	n := 0
	for _, inf := range s.informers {
		n += len(inf.GetStore().ListKeys())
	}
	return n
}

// Present reports whether the client of that namespace, name and UID is cached.
func (s *InformerClients) Present(key types.NamespacedName, uid types.UID) bool {
	for _, inf := range s.informers {
		if obj, ok, _ := inf.GetStore().GetByKey(key.String()); ok {
			return obj.(*CachedClient).UID == uid
		}
	}
	return false
}

// behind reports whether the cache may be behind the API server: a watch is not open, or one
// failed within refreshWindow.
func (s *InformerClients) behind() bool {
	if s.openWatches.Load() < int64(len(s.informers)) {
		return true
	}
	last := s.lastWatchError.Load()
	return last != 0 && s.clock.Since(time.Unix(0, last)) < refreshWindow
}

// refreshed is one read past the cache: when, what it found (nil if it failed), and done, closed
// when the read has ended, which requests for the same client wait for.
type refreshed struct {
	at     time.Time
	client *CachedClient
	done   chan struct{}
}

// Refresh reads client from the API server while the cache may be behind: a read of the last
// refreshReuse serves again while accepts says yes to it, requests for a client wait for its
// read in flight, a client is read again at most every refreshEvery (a request waits for that
// rather than be refused), and refreshRate reads a second in all. Outside those windows a refused secret
// costs what it always does, so that reading past the cache tells no one which client IDs exist.
func (s *InformerClients) Refresh(ctx context.Context, cached *CachedClient, accepts func(*CachedClient) bool) *CachedClient {
	if s.reader == nil || !s.behind() {
		return nil
	}
	// At most: wait for a read in flight, wait until the client may be read again, read.
	waited := false
	for range 3 {
		now := s.clock.Now()
		s.refreshedMu.Lock()
		last, ok := s.refreshed[cached.UID]
		if ok {
			select {
			case <-last.done:
			default: // a read in flight: wait for it rather than be refused
				s.refreshedMu.Unlock()
				if !waitFor(ctx, last.done, nil) {
					return nil
				}
				continue
			}
			age := now.Sub(last.at)
			if last.client != nil && age < refreshReuse && accepts(last.client) {
				s.refreshedMu.Unlock()
				return last.client
			}
			if last.client != nil && age < refreshEvery && !waited {
				// Read a moment ago, without this secret (rotated since?): read again when
				// the client may be read again, rather than refuse a secret that may be new.
				s.refreshedMu.Unlock()
				if !waitFor(ctx, nil, time.After(refreshEvery-age)) {
					return nil
				}
				waited = true
				continue
			}
		}
		if !s.refreshLimit.AllowN(now, 1) {
			s.refreshedMu.Unlock()
			return nil
		}
		if s.refreshed == nil || len(s.refreshed) >= 10000 {
			s.refreshed = map[types.UID]refreshed{} // a bound, not a record: forgetting costs one read
		}
		// Taken before the read, so that requests for this client meanwhile wait for it.
		entry := refreshed{at: now, done: make(chan struct{})}
		s.refreshed[cached.UID] = entry
		s.refreshedMu.Unlock()

		entry.client = s.read(ctx, cached)
		s.refreshedMu.Lock()
		s.refreshed[cached.UID] = entry
		s.refreshedMu.Unlock()
		close(entry.done)
		if entry.client == nil || !accepts(entry.client) {
			return nil
		}
		return entry.client
	}
	return nil
}

// waitFor waits for done or after, and reports false when ctx ends first.
func waitFor(ctx context.Context, done <-chan struct{}, after <-chan time.Time) bool {
	select {
	case <-done:
	case <-after:
	case <-ctx.Done():
		return false
	}
	return true
}

// read gets cached's object from the API server, decoded and converted as the cache does, or nil
// when it fails or is another object of the same name.
func (s *InformerClients) read(ctx context.Context, cached *CachedClient) *CachedClient {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	// Right after an API server starts, it may refuse or drop a request for a moment (its
	// authorizer's caches are empty): try again within the timeout.
	for {
		err := s.reader.Get(ctx, types.NamespacedName{Namespace: cached.Namespace, Name: cached.Name}, u)
		if err == nil {
			break
		}
		log.FromContext(ctx).V(1).Info("reading a client past the cache", "namespace", cached.Namespace, "name", cached.Name, "error", err.Error())
		if !waitFor(ctx, nil, time.After(100*time.Millisecond)) {
			return nil
		}
	}
	obj, ok := s.decode(ctx, u)
	if !ok || obj.UID != cached.UID || obj.DeletionTimestamp != nil {
		return nil // as the cache's Candidates, which offer no client being deleted
	}
	return NewCachedClient(obj)
}

// Candidates finds the clients with status.clientID id in O(1).
func (s *InformerClients) Candidates(id string) []*CachedClient {
	s.byIDMu.RLock()
	found := s.byID[id]
	s.byIDMu.RUnlock()
	for i, c := range found {
		if c.deleting {
			// Rare: a client being deleted is offered no more (a copy, since found is shared).
			out := slices.Clone(found[:i])
			for _, c := range found[i+1:] {
				if !c.deleting {
					out = append(out, c)
				}
			}
			return out
		}
	}
	return found
}

// clientKey is a client's namespace and name.
type clientKey struct{ namespace, name string }

// index follows one change of an informer's store in byID: obj, of the object of its namespace
// and name, is its new version, or with deleted, was deleted (obj may be a tombstone, or a stub
// with only the namespace and name).
func (s *InformerClients) index(obj any, deleted bool) {
	var key clientKey
	switch o := obj.(type) {
	case *CachedClient:
		key = clientKey{o.Namespace, o.Name}
		if !deleted && s.arrival != nil {
			// Before Candidates can offer it: no request pays, or is timed paying, for the
			// verification of a version it is the first to ask for.
			s.arrival(o)
		}
	case toolscache.DeletedFinalStateUnknown:
		ns, name, err := toolscache.SplitMetaNamespaceKey(o.Key)
		if err != nil {
			return
		}
		key, deleted = clientKey{ns, name}, true
	default:
		return
	}
	s.byIDMu.Lock()
	defer s.byIDMu.Unlock()
	if s.byID == nil {
		s.byID, s.byKey = map[string][]*CachedClient{}, map[clientKey]*CachedClient{}
	}
	if old := s.byKey[key]; old != nil {
		delete(s.byKey, key)
		if rest := withoutClient(s.byID[old.Status.ClientID], old); len(rest) > 0 {
			s.byID[old.Status.ClientID] = rest
		} else {
			delete(s.byID, old.Status.ClientID)
		}
	}
	if c, ok := obj.(*CachedClient); ok && !deleted && c.Status.ClientID != "" {
		s.byKey[key] = c
		s.byID[c.Status.ClientID] = append(slices.Clip(s.byID[c.Status.ClientID]), c)
	}
}

// withoutClient is a new list of the clients of list but c.
func withoutClient(list []*CachedClient, c *CachedClient) []*CachedClient {
	var out []*CachedClient
	for _, o := range list {
		if o != c {
			out = append(out, o)
		}
	}
	return out
}

// lookup finds the one client whose authenticated status.clientID is id. A client whose status
// names id without the manager's MAC is not it (someone wrote that status), and if two are, none
// is, so that no client authenticates as another.
func (s *Server) lookup(id string, st *keyState) (*CachedClient, bool) {
	if st == nil || id == "" {
		return nil, false
	}
	var found *CachedClient
	for _, c := range s.cfg.Clients.Candidates(id) {
		if !st.trustsClientID(c) {
			continue
		}
		if found != nil {
			return nil, false
		}
		found = c
	}
	return found, found != nil
}
