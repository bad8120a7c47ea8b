package controllers

import (
	"context"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// BindingRevocationReconciler records on each ClientIDBinding's status when its client is
// disabled or deleted (status.tokensRevokedBefore), so that the token server's revocation list
// keeps refusing the tokens issued before, after the client is enabled again or is gone and the
// token server restarts. The token server reads the record and writes nothing; tenants cannot
// write bindings, so they can neither forge nor erase it.
type BindingRevocationReconciler struct {
	client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	// WatchNamespaces are the namespaces whose clients the manager sees; empty means all. A
	// binding of a client elsewhere is left alone: its client's absence from the cache says
	// nothing.
	WatchNamespaces []string
}

// SetupWithManager registers the controller; the M2MClient controller registers the index of
// bindings by client it uses.
func (r *BindingRevocationReconciler) SetupWithManager(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).
		For(&m2mv1alpha1.ClientIDBinding{}).
		// Creation, deletion and spec changes (disabled) of a client; its status writes, the
		// most frequent updates, change nothing here.
		Watches(&m2mv1alpha1.M2MClient{}, handler.EnqueueRequestsFromMapFunc(r.bindingsOfClient),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("clientidbinding-revocation").
		Complete(r)
}

func (r *BindingRevocationReconciler) bindingsOfClient(ctx context.Context, o client.Object) []reconcile.Request {
	var list m2mv1alpha1.ClientIDBindingList
	if err := r.List(ctx, &list, client.MatchingFields{boundClientIndex: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
	}
	return reqs
}

// Reconcile brings the binding's status in line with its client (BindingRecord).
func (r *BindingRevocationReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	b := &m2mv1alpha1.ClientIDBinding{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if len(r.WatchNamespaces) > 0 && !slices.Contains(r.WatchNamespaces, b.Spec.Namespace) {
		return reconcile.Result{}, nil
	}
	key := types.NamespacedName{Namespace: b.Spec.Namespace, Name: b.Spec.Name}
	c := &m2mv1alpha1.M2MClient{}
	err := r.Get(ctx, key, c)
	if apierrors.IsNotFound(err) {
		// A deletion is recorded for good: confirm it past the cache.
		err = r.APIReader.Get(ctx, key, c)
	}
	gone := apierrors.IsNotFound(err)
	if err != nil && !gone {
		return reconcile.Result{}, err
	}
	base := b.DeepCopy()
	if gone {
		c = nil
	}
	b.Status = BindingRecord(b.Status, b.CreationTimestamp.Time, c, r.Clock.Now())
	st := &b.Status
	if statusEqual(base.Status, b.Status) {
		return reconcile.Result{}, nil
	}
	if err := r.Status().Patch(ctx, b, client.MergeFrom(base)); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !st.TokensRevokedBefore.Equal(base.Status.TokensRevokedBefore) {
		log.FromContext(ctx).Info("recorded the revocation of a client's tokens on its binding", "clientID", b.Spec.ClientID,
			"client", key.String(), "tokensRevokedBefore", st.TokensRevokedBefore, "deleted", gone)
	}
	return reconcile.Result{}, nil
}

func statusEqual(a, b m2mv1alpha1.ClientIDBindingStatus) bool {
	eq := func(x, y *metav1.Time) bool {
		if x == nil || y == nil {
			return x == y
		}
		return x.Equal(y)
	}
	return eq(a.TokensRevokedBefore, b.TokensRevokedBefore) && eq(a.DisabledSince, b.DisabledSince) && eq(a.DeletedAt, b.DeletedAt) &&
		a.ClientUID == b.ClientUID
}
