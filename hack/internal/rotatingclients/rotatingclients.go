// Package rotatingclients creates M2MClients for the real manager to make Ready and rotate,
// rotates them all at once with a new spec.rotation.trigger, and shows each client's Secret to
// its "pod" as a kubelet-refreshed volume would: a new value only some time after it was
// written. bench-rotation and the soak use it.
package rotatingclients

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// FirstTrigger is the spec.rotation.trigger the clients are created with.
const FirstTrigger = "v1"

// Clients are N M2MClients in one namespace, named client-00000 and up.
type Clients struct {
	Client    client.Client
	Namespace string
	N         int
}

// Name is the name of client i.
func (cs Clients) Name(i int) string { return fmt.Sprintf("client-%05d", i) }

// SecretName is the name of client i's credentials Secret.
func (cs Clients) SecretName(i int) string { return cs.Name(i) + "-credentials" }

// Create creates the clients (one scope, one audience, trigger FirstTrigger, the grace period
// given), 16 at a time.
func (cs Clients) Create(ctx context.Context, grace time.Duration) error {
	return cs.each(func(i int) error {
		return cs.Client.Create(ctx, &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: cs.Namespace, Name: cs.Name(i)},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:things"},
				Audiences: []m2mv1alpha1.Audience{"https://api.example.com"},
				Rotation:  m2mv1alpha1.RotationPolicy{Trigger: FirstTrigger, GracePeriod: &metav1.Duration{Duration: grace}},
			},
		})
	})
}

// Trigger sets spec.rotation.trigger to value on every client, 16 at a time: each rotates once.
func (cs Clients) Trigger(ctx context.Context, value string) error {
	return cs.each(func(i int) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			o := &m2mv1alpha1.M2MClient{}
			if err := cs.Client.Get(ctx, client.ObjectKey{Namespace: cs.Namespace, Name: cs.Name(i)}, o); err != nil {
				return err
			}
			o.Spec.Rotation.Trigger = value
			return cs.Client.Update(ctx, o)
		})
	})
}

// each calls f for every client, 16 at a time, and returns the first error.
func (cs Clients) each(f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < cs.N; i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	wg.Wait()
	return first
}

// Rotated is true of a client that has acted on trigger value and holds one current secret and
// the previous one, in its grace period.
func Rotated(value string) func(*m2mv1alpha1.M2MClient) bool {
	return func(o *m2mv1alpha1.M2MClient) bool {
		return o.Status.LastRotationTrigger == value && credentials.Entries(o.Status.AcceptedSecrets).Unexpiring() == 1 && len(o.Status.AcceptedSecrets) == 2
	}
}

// Wait waits until every client is Ready and satisfies done, looking every 200 ms per 1,000
// clients, for at most timeout.
func (cs Clients) Wait(ctx context.Context, timeout time.Duration, done func(*m2mv1alpha1.M2MClient) bool) error {
	every := 200 * time.Millisecond * time.Duration(max(1, cs.N/1000))
	deadline := time.Now().Add(timeout)
	count := 0
	for time.Now().Before(deadline) {
		var list m2mv1alpha1.M2MClientList
		if err := cs.Client.List(ctx, &list, client.InNamespace(cs.Namespace)); err != nil {
			return err
		}
		count = 0
		for i := range list.Items {
			o := &list.Items[i]
			if meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) && done(o) {
				count++
			}
		}
		if count == cs.N {
			return nil
		}
		time.Sleep(every)
	}
	return fmt.Errorf("%d of %d clients settled in %s", count, cs.N, timeout)
}

// Mount is what one client's pod sees of its Secret: a changed client_secret only delay after
// the change.
type Mount struct {
	mu               sync.Mutex
	id, secret, next string
	nextAt           time.Time
	changes          int
}

// Get returns the client ID and secret the pod reads at now.
func (m *Mount) Get(now time.Time) (id, secret string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.next != "" && !now.Before(m.nextAt) {
		m.secret, m.next = m.next, ""
	}
	return m.id, m.secret
}

// Changes is how many times the Secret's client_secret changed since Follow began.
func (m *Mount) Changes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changes
}

// Switched reports whether the pod reads at now the value the Secret holds.
func (m *Mount) Switched(now time.Time) bool {
	m.Get(now)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.next == ""
}

// Follow watches the clients' Secrets (with an informer, which lists again when its watch ends)
// and returns a Mount for each, which starts with the Secret's current credentials and gets
// each later client_secret delay after the informer saw it. It stops when ctx ends.
func (cs Clients) Follow(ctx context.Context, cfg *rest.Config, delay time.Duration) ([]*Mount, error) {
	mounts := make([]*Mount, cs.N)
	byName := make(map[string]*Mount, cs.N)
	for i := range mounts {
		mounts[i] = &Mount{}
		byName[cs.SecretName(i)] = mounts[i]
	}
	secrets, err := cache.New(cfg, cache.Options{Scheme: m2mv1alpha1.NewScheme(), DefaultNamespaces: map[string]cache.Config{cs.Namespace: {}}})
	if err != nil {
		return nil, err
	}
	inf, err := secrets.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return nil, err
	}
	value := func(obj any) (*Mount, string, string) {
		s, ok := obj.(*corev1.Secret)
		if !ok || byName[s.Name] == nil {
			return nil, "", ""
		}
		return byName[s.Name], string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if m, id, secret := value(obj); m != nil {
				m.mu.Lock()
				m.id, m.secret = id, secret
				m.mu.Unlock()
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			_, _, was := value(oldObj)
			m, _, secret := value(newObj)
			if m == nil || secret == was {
				return
			}
			m.mu.Lock()
			m.changes++
			m.next, m.nextAt = secret, time.Now().Add(delay)
			m.mu.Unlock()
		},
	})
	if err != nil {
		return nil, err
	}
	go func() { _ = secrets.Start(ctx) }()
	// The handler has seen every Secret of the first LIST.
	if !toolscache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return nil, fmt.Errorf("the Secrets of %s did not sync", cs.Namespace)
	}
	for i, m := range mounts {
		if id, secret := m.Get(time.Now()); id == "" || secret == "" {
			return nil, fmt.Errorf("Secret %s/%s holds no credentials", cs.Namespace, cs.SecretName(i))
		}
	}
	return mounts, nil
}
