package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// StatusesRepaired counts the M2MClient statuses that did not decode and that the manager
// removed, so that it rebuilds them.
var StatusesRepaired = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "m2m_manager_statuses_repaired_total",
	Help: "M2MClient statuses the manager removed because they did not decode (every LIST of M2MClients failed on them); it rebuilds each from the client's binding and Secret.",
})

// statusRepair keeps one M2MClient that does not decode from stopping the manager for every
// namespace. Where the status policy is not installed, a status writer can store a time such as
// 2026-01-01t00:00:00z, which the API server's date-time check accepts and metav1.Time does not:
// every typed LIST of M2MClients then fails, and no client anywhere is reconciled. When the cache's
// LIST or WATCH of M2MClients fails for any reason other than the API server's answer, it lists
// them as unstructured objects, and removes the status of each that does not decode. The
// reconciler then rebuilds it as after a lost status (the client ID from its ClientIDBinding, the
// credential from its Secret); the token server gives it no tokens meanwhile.
type statusRepair struct {
	// namespaces are the watched namespaces; empty means all.
	namespaces []string

	mu       sync.Mutex
	client   client.Client
	reader   client.Reader
	recorder events.EventRecorder
	// elected is closed once this replica leads: only the leader writes status, so that a
	// standby of another version never removes a status it cannot read but the leader can.
	elected <-chan struct{}
	// last is when a repair last ran; repairs are at least repairInterval apart, so that the
	// reflector's retries do not turn into a LIST of every client each time.
	last time.Time
}

// repairInterval is the least time between two repairs.
const repairInterval = 10 * time.Second

// repairPageSize bounds how many objects one page of the repair's LIST holds in memory.
const repairPageSize = 100

// start gives the repair its clients once the manager exists; until then a failure is only
// logged.
func (s *statusRepair) start(c client.Client, reader client.Reader, recorder events.EventRecorder, elected <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client, s.reader, s.recorder, s.elected = c, reader, recorder, elected
}

// onWatchError is the cache's watch error handler.
func (s *statusRepair) onWatchError(ctx context.Context, r *toolscache.Reflector, err error) {
	toolscache.DefaultWatchErrorHandler(ctx, r, err)
	var status apierrors.APIStatus
	if errors.As(err, &status) || r.TypeDescription() != "*v1alpha1.M2MClient" {
		return // the API server answered (an expired resourceVersion, a permission): not this
	}
	s.repair(ctx)
}

// repair removes the status of every M2MClient that does not decode.
func (s *statusRepair) repair(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil || time.Since(s.last) < repairInterval {
		return
	}
	select {
	case <-s.elected:
	default:
		return // a standby
	}
	s.last = time.Now()
	namespaces := s.namespaces
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	for _, ns := range namespaces {
		s.repairNamespace(ctx, ns)
	}
}

// repairNamespace pages through the M2MClients of ns ("" for all) and removes the status of each
// that does not decode.
func (s *statusRepair) repairNamespace(ctx context.Context, ns string) {
	logger := log.FromContext(ctx).WithName("status-repair")
	cont := ""
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(m2mv1alpha1.GroupVersion.WithKind("M2MClientList"))
		if err := s.reader.List(ctx, list, client.InNamespace(ns), client.Limit(repairPageSize), client.Continue(cont)); err != nil {
			logger.Error(err, "listing M2MClients to find one that does not decode")
			return
		}
		for i := range list.Items {
			s.repairOne(ctx, &list.Items[i])
		}
		if cont = list.GetContinue(); cont == "" {
			return
		}
	}
}

// repairOne removes u's status when it does not decode. The patch names u's UID and
// resourceVersion, so that it never removes the status of a newer version or another object.
func (s *statusRepair) repairOne(ctx context.Context, u *unstructured.Unstructured) {
	decodeErr := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &m2mv1alpha1.M2MClient{})
	if decodeErr == nil {
		return
	}
	logger := log.FromContext(ctx).WithName("status-repair").WithValues("namespace", u.GetNamespace(), "name", u.GetName())
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": u.GetUID(), "resourceVersion": u.GetResourceVersion()},
		"status":   nil,
	})
	if err != nil {
		return
	}
	if err := s.client.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, patch)); err != nil {
		logger.Error(err, "removing a status that does not decode")
		return
	}
	StatusesRepaired.Inc()
	logger.Info("removed a status that does not decode; it is rebuilt from the client's binding and Secret", "error", decodeErr.Error())
	s.recorder.Eventf(u, nil, corev1.EventTypeWarning, m2mv1alpha1.EventStatusUndecodable, "Repair",
		"status did not decode (%v) and stopped the manager's cache for every client; it was removed and is rebuilt from the client's binding and Secret", decodeErr)
}
