package controllers

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const (
	// ComponentLabel and SigningKeyComponent mark the signing-key Secret among the manager's Secrets.
	ComponentLabel      = "app.kubernetes.io/component"
	SigningKeyComponent = "signing-keys"

	// damagedKeysRecheck is how often a signing-key Secret that does not parse is looked at
	// again. The manager never overwrites it: the keys in it may be the only copy.
	damagedKeysRecheck = time.Minute
)

// SigningKeyReconciler keeps the signing-key Secret holding a valid set with one active key.
type SigningKeyReconciler struct {
	client.Client
	// APIReader reads the Secret when the label-filtered cache does not hold it (for example a
	// Secret restored from a backup without the manager's label).
	APIReader client.Reader
	Clock     clock.PassiveClock
	// Secret is the namespace and name of the signing-key Secret.
	Secret types.NamespacedName
	// Policy is the rotation policy of the keys.
	Policy signingkeys.Policy
	// StatusKeyPeriod is how long a status MAC key signs before the next takes over; 0 for never.
	StatusKeyPeriod time.Duration

	// waiting is set while the status keys wait for the fleet of M2MClients (enforcement after an
	// upgrade, or a retired key still in use), so that changes to M2MClients wake the reconciler.
	waiting atomic.Bool
}

// SetupWithManager registers the controller. It reconciles once at start, and whenever the
// Secret changes or is deleted.
func (r *SigningKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := reconcile.Request{NamespacedName: r.Secret}
	atStart := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(req)
		return nil
	})
	isKeySecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Secret.Namespace && o.GetName() == r.Secret.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("signingkeys").
		WatchesRawSource(atStart).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{req}
		}), builder.WithPredicates(isKeySecret)).
		// While the status keys wait for every status to be authenticated again, each change
		// to an M2MClient may be the last one they wait for.
		Watches(&m2mv1alpha1.M2MClient{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			if !r.waiting.Load() {
				return nil
			}
			return []reconcile.Request{req}
		})).
		Complete(r)
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update

// Reconcile creates the Secret with an active key when it is missing, and moves the keys through
// their life (next, active, retired, gone) as signingkeys.Plan decides, and the status MAC keys
// as statusmac.Plan decides. It requeues for the moment a plan next changes.
func (r *SigningKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx).WithValues("secret", r.Secret.String())
	now := r.Clock.Now()

	secret := &corev1.Secret{}
	err := r.Get(ctx, r.Secret, secret)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, r.Secret, secret)
	}
	if apierrors.IsNotFound(err) {
		set, err := signingkeys.Apply(&signingkeys.Set{}, signingkeys.KeyPlan{AddActive: true}, r.Policy, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		data, err := set.Encode()
		if err != nil {
			return ctrl.Result{}, err
		}
		status, err := statusmac.Apply(nil, statusmac.KeyPlan{AddActive: true}, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		statusData, err := status.Encode()
		if err != nil {
			return ctrl.Result{}, err
		}
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Secret.Namespace, Name: r.Secret.Name, Labels: r.labels(nil)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{signingkeys.DataKey: data, statusmac.DataKey: statusData},
		}
		if err := r.Create(ctx, secret); err != nil {
			return ctrl.Result{}, err
		}
		logger.Info("created the signing-key Secret", "kid", set.Active().KID, "alg", set.Active().Algorithm)
		// The status keys' plan (enforcement) is made on the next pass, which the Secret's
		// creation event starts.
		return ctrl.Result{RequeueAfter: max(signingkeys.Plan(set, r.Policy, now).WakeAt.Sub(now), 0)}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}

	set, err := signingkeys.Parse(secret.Data[signingkeys.DataKey])
	if err != nil {
		logger.Error(err, "the signing-key Secret is damaged; it is left as it is and the token server keeps the keys it had")
		return ctrl.Result{RequeueAfter: damagedKeysRecheck}, nil
	}
	var status *statusmac.Set
	if raw, ok := secret.Data[statusmac.DataKey]; ok {
		if status, err = statusmac.Parse(raw); err != nil {
			logger.Error(err, "the status keys in the signing-key Secret are damaged; they are left as they are")
			return ctrl.Result{RequeueAfter: damagedKeysRecheck}, nil
		}
	}
	fleet, err := r.fleet(ctx, status)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := signingkeys.Plan(set, r.Policy, now)
	statusPlan := statusmac.Plan(status, fleet, r.StatusKeyPeriod, now)
	labels := r.labels(secret.Labels)
	if !plan.Empty() || !statusPlan.Empty() || !maps.Equal(labels, secret.Labels) {
		if !plan.Empty() {
			if set, err = signingkeys.Apply(set, plan, r.Policy, now); err != nil {
				return ctrl.Result{}, err
			}
		}
		if !statusPlan.Empty() {
			if status, err = statusmac.Apply(status, statusPlan, now); err != nil {
				return ctrl.Result{}, err
			}
		}
		data, err := set.Encode()
		if err != nil {
			return ctrl.Result{}, err
		}
		statusData, err := status.Encode()
		if err != nil {
			return ctrl.Result{}, err
		}
		secret.Labels = labels
		secret.Data[signingkeys.DataKey] = data
		secret.Data[statusmac.DataKey] = statusData
		if err := r.Update(ctx, secret); err != nil {
			return ctrl.Result{}, err
		}
		for _, why := range plan.Why {
			logger.Info("signing keys: " + why)
		}
		for _, why := range statusPlan.Why {
			logger.Info("status keys: " + why)
		}
		// What the plans say after this step is when to look again.
		plan = signingkeys.Plan(set, r.Policy, now)
		statusPlan = statusmac.Plan(status, fleet, r.StatusKeyPeriod, now)
	}
	r.waiting.Store(!status.Enforced() || slices.ContainsFunc(status.Keys, func(k *statusmac.Key) bool { return k.State == statusmac.StateRetired }))
	wake := plan.WakeAt
	if !statusPlan.WakeAt.IsZero() && (wake.IsZero() || statusPlan.WakeAt.Before(wake)) {
		wake = statusPlan.WakeAt
	}
	if wake.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(wake.Sub(now), time.Millisecond)}, nil
}

// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients,verbs=get;list;watch

// fleet reads every M2MClient's status from the cache: whether all are authenticated, and which
// status keys they use.
func (r *SigningKeyReconciler) fleet(ctx context.Context, status *statusmac.Set) (statusmac.Fleet, error) {
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list); err != nil {
		return statusmac.Fleet{}, err
	}
	f := statusmac.Fleet{AllAuthenticated: true, InUse: map[string]bool{}}
	for i := range list.Items {
		obj := &list.Items[i]
		if !obj.DeletionTimestamp.IsZero() {
			// The token server ignores a client being deleted, and the manager no longer
			// seals it: a finalizer that never goes must not hold enforcement back.
			continue
		}
		ok, ids := status.Inspect(obj)
		f.AllAuthenticated = f.AllAuthenticated && ok
		for _, id := range ids {
			f.InUse[id] = true
		}
	}
	return f, nil
}

func (r *SigningKeyReconciler) labels(existing map[string]string) map[string]string {
	return componentLabels(existing, SigningKeyComponent)
}
