package tokenserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// ClientSource finds M2MClients by client ID.
type ClientSource interface {
	// Candidates returns the live clients whose status.clientID is id: one, unless someone wrote
	// another's ID into a status, which the server tells apart by the status MAC. The returned
	// objects are shared and must not be modified.
	Candidates(id string) []*m2mv1alpha1.M2MClient
}

const clientIDIndex = "status.clientID"

// InformerClients is a ClientSource backed by informers on M2MClients: one per watched
// namespace, or one for the whole cluster. It never reads Secrets.
type InformerClients struct {
	informers []toolscache.SharedIndexInformer
	clock     clock.PassiveClock

	// Staleness tracking: the time of the last message from the API server (an object event or a
	// bookmark), and how many watch streams are open right now.
	lastMessage atomic.Int64 // unix nanoseconds
	openWatches atomic.Int64
}

// NewInformerClients prepares informers; Start runs them.
func NewInformerClients(cfg *rest.Config, namespaces []string, clk clock.PassiveClock) (*InformerClients, error) {
	// The token server reads M2MClients only: a scheme with nothing else, and no dependency on
	// the manager's packages.
	scheme := runtime.NewScheme()
	if err := m2mv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	s := &InformerClients{clock: clk}
	s.lastMessage.Store(clk.Now().UnixNano())
	for _, ns := range namespaces {
		inf := toolscache.NewSharedIndexInformer(s.listWatch(c, ns), &m2mv1alpha1.M2MClient{}, 0, toolscache.Indexers{
			clientIDIndex: func(obj any) ([]string, error) {
				if c, ok := obj.(*m2mv1alpha1.M2MClient); ok && c.Status.ClientID != "" {
					return []string{c.Status.ClientID}, nil
				}
				return nil, nil
			},
		})
		// Only the fields the token server reads are worth their memory.
		if err := inf.SetTransform(trim); err != nil {
			return nil, err
		}
		s.informers = append(s.informers, inf)
	}
	return s, nil
}

// trim drops what the token server never reads: managedFields, annotations and labels (which can
// be large, such as kubectl's last-applied configuration), and the spec's free-form metadata.
func trim(obj any) (any, error) {
	c, ok := obj.(*m2mv1alpha1.M2MClient)
	if !ok {
		return obj, nil
	}
	c.ManagedFields = nil
	c.Annotations = nil
	c.Labels = nil
	c.OwnerReferences = nil
	c.Spec.Description = ""
	c.Spec.TrustedMetadata = nil
	c.Spec.Secret = m2mv1alpha1.SecretTemplate{}
	c.Status.Conditions = nil
	return c, nil
}

func (s *InformerClients) listWatch(c client.WithWatch, ns string) *toolscache.ListWatch {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list := &m2mv1alpha1.M2MClientList{}
			err := c.List(ctx, list, &client.ListOptions{Namespace: ns, Raw: &opts})
			if err == nil {
				s.touch()
			}
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := c.Watch(ctx, &m2mv1alpha1.M2MClientList{}, &client.ListOptions{Namespace: ns, Raw: &opts})
			if err != nil {
				return nil, err
			}
			s.touch()
			return s.observe(w), nil
		},
	}
}

func (s *InformerClients) touch() { s.lastMessage.Store(s.clock.Now().UnixNano()) }

// observe passes a watch through, noting every message (bookmarks included) and whether the
// stream is open.
func (s *InformerClients) observe(w watch.Interface) watch.Interface {
	o := &observedWatch{inner: w, out: make(chan watch.Event), done: make(chan struct{})}
	s.openWatches.Add(1)
	go func() {
		defer close(o.out)
		defer s.openWatches.Add(-1)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				s.touch()
				select {
				case o.out <- ev:
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

// Start runs the informers until ctx ends.
func (s *InformerClients) Start(ctx context.Context) {
	for _, inf := range s.informers {
		go inf.RunWithContext(ctx)
	}
}

// Synced reports whether every informer has listed once. It stays true when the API server goes
// away later: the cache keeps serving what it has.
func (s *InformerClients) Synced() bool {
	for _, inf := range s.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// WaitForSync blocks until Synced or ctx ends.
func (s *InformerClients) WaitForSync(ctx context.Context) error {
	fns := make([]toolscache.InformerSynced, 0, len(s.informers))
	for _, inf := range s.informers {
		fns = append(fns, inf.HasSynced)
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

// Candidates finds the clients with status.clientID id in O(1).
func (s *InformerClients) Candidates(id string) []*m2mv1alpha1.M2MClient {
	var out []*m2mv1alpha1.M2MClient
	for _, inf := range s.informers {
		objs, err := inf.GetIndexer().ByIndex(clientIDIndex, id)
		if err != nil {
			return nil
		}
		for _, o := range objs {
			if c := o.(*m2mv1alpha1.M2MClient); c.DeletionTimestamp == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// lookup finds the one client whose authenticated status.clientID is id. A client whose status
// names id without the manager's MAC is not it (someone wrote that status), and if two are, none
// is, so that no client authenticates as another.
func (s *Server) lookup(id string, st *keyState) (*m2mv1alpha1.M2MClient, bool) {
	if st == nil || id == "" {
		return nil, false
	}
	var found *m2mv1alpha1.M2MClient
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
