package controllers

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/undecodable"
)

// statusRepair keeps one M2MClient that does not decode from stopping the manager for every
// namespace, and rebuilds it. Where the status policy is not installed, a status writer can
// store a time such as 2026-01-01t00:00:00z, which the API server's date-time check accepts and
// metav1.Time does not: a typed LIST of M2MClients fails on it, and a WATCH ends on it.
//
// The manager's cache therefore reads M2MClients through an undecodable.Filter (cacheHTTPClient),
// which leaves such an object out of every LIST and WATCH answer, one object at a time: every
// other client keeps being reconciled, however often the object is written. The filter queues
// the object here; the leader removes its status, with the UID and resourceVersion it saw as
// preconditions, and the reconciler then rebuilds the status as after a lost one (the client ID
// from its ClientIDBinding, the credential from its Secret). The token server gives the client
// no tokens meanwhile. A writer who poisons the same status again is repaired again after a
// delay that doubles each time (up to repairMaxDelay), so that it cannot make the manager write
// in a loop.
type statusRepair struct {
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	client   client.Client
	reader   client.Reader
	recorder events.EventRecorder
}

const (
	// repairFirstDelay is how long after a first report the status is removed.
	repairFirstDelay = time.Second
	// repairMaxDelay bounds the delay before a status poisoned again and again is removed.
	repairMaxDelay = 5 * time.Minute
)

func newStatusRepair() *statusRepair {
	return &statusRepair{queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](repairFirstDelay, repairMaxDelay),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "m2m-status-repair"},
	)}
}

// cacheHTTPClient returns the HTTP client of the manager's cache: cfg's, with M2MClients that
// do not decode left out of LIST and WATCH answers and reported to s.
func (s *statusRepair) cacheHTTPClient(cfg *rest.Config) (*http.Client, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	server, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	filtered := *hc
	filtered.Transport = s.filterTransport(hc.Transport, server.Path)
	return &filtered, nil
}

// filterTransport is base with M2MClients that do not decode left out of LIST and WATCH answers
// and reported to s. serverPath is the API server URL's path, which a proxy in front of it (one
// that serves many clusters, say) may add before /apis.
func (s *statusRepair) filterTransport(base http.RoundTripper, serverPath string) http.RoundTripper {
	decoder := serializer.NewCodecFactory(m2mv1alpha1.NewScheme()).UniversalDeserializer()
	return &undecodable.Filter{
		Base:       base,
		PathPrefix: undecodable.PathPrefix(serverPath, m2mv1alpha1.GroupVersion),
		Resource:   "m2mclients",
		Decode: func(object []byte) error {
			_, _, err := decoder.Decode(object, nil, &m2mv1alpha1.M2MClient{})
			return err
		},
		Report: func(_ context.Context, o undecodable.Object) { s.report(o) },
	}
}

// report queues an object the cache left out.
func (s *statusRepair) report(o undecodable.Object) {
	UndecodableClients.Inc()
	s.queue.AddRateLimited(types.NamespacedName{Namespace: o.Namespace, Name: o.Name})
}

// start gives the repair its clients once the manager exists.
func (s *statusRepair) start(c client.Client, reader client.Reader, recorder events.EventRecorder) {
	s.client, s.reader, s.recorder = c, reader, recorder
}

// NeedLeaderElection makes only the leader repair, so that a standby of another version never
// removes a status it cannot read but the leader can. A standby's queue keeps what it was told.
func (s *statusRepair) NeedLeaderElection() bool { return true }

// Start repairs queued objects, one at a time, until ctx ends.
func (s *statusRepair) Start(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for {
		key, shutdown := s.queue.Get()
		if shutdown {
			return nil
		}
		s.repairOne(ctx, key)
		s.queue.Done(key)
	}
}

// repairOne removes key's status when it does not decode. The patch names the UID and
// resourceVersion it read, so that it never removes the status of a newer version or of another
// object of the same name.
func (s *statusRepair) repairOne(ctx context.Context, key types.NamespacedName) {
	logger := log.FromContext(ctx).WithName("status-repair").WithValues("namespace", key.Namespace, "name", key.Name)
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClient"))
	if err := s.reader.Get(ctx, key, u); err != nil {
		if apierrors.IsNotFound(err) {
			s.queue.Forget(key)
			return
		}
		logger.Error(err, "reading an M2MClient that did not decode")
		s.queue.AddRateLimited(key)
		return
	}
	decodeErr := decode(u)
	if decodeErr == nil {
		// Repaired, or changed by someone else, since it was reported. Its next poisoning
		// is repaired after the first delay again.
		s.queue.Forget(key)
		return
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": u.GetUID(), "resourceVersion": u.GetResourceVersion()},
		"status":   nil,
	})
	if err != nil {
		return
	}
	if err := s.client.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if !apierrors.IsNotFound(err) {
			logger.Error(err, "removing a status that does not decode")
			s.queue.AddRateLimited(key)
		}
		return
	}
	StatusesRepaired.Inc()
	// Look again once the longest delay has passed: the key's delay is forgotten then if the
	// object decodes or is gone, so that keys of objects long repaired or deleted do not pile up.
	s.queue.AddAfter(key, repairMaxDelay)
	if err := decode(u); err != nil {
		// Something outside the status does not decode either: nothing the manager may
		// rewrite. The client stays out of the caches until its owner fixes it.
		logger.Error(err, "an M2MClient does not decode even without its status; it gets no tokens until it is fixed")
		s.recorder.Eventf(u, nil, corev1.EventTypeWarning, m2mv1alpha1.EventStatusUndecodable, "Repair",
			"the client does not decode even without its status (%v); the manager and the token server leave it out until it is fixed", err)
		return
	}
	logger.Info("removed a status that does not decode; it is rebuilt from the client's binding and Secret", "error", decodeErr.Error())
	s.recorder.Eventf(u, nil, corev1.EventTypeWarning, m2mv1alpha1.EventStatusUndecodable, "Repair",
		"status did not decode (%v); it was removed and is rebuilt from the client's binding and Secret", decodeErr)
}

// decode reports whether u decodes as an M2MClient.
func decode(u *unstructured.Unstructured) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &m2mv1alpha1.M2MClient{})
}
