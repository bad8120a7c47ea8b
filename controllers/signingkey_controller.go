package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const (
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
	// ignored logs rotation annotations too long to act on.
	ignored ignoredAsks
}

// SetupWithManager registers the controller. It reconciles once at start, and whenever the
// Secret changes or is deleted.
func (r *SigningKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := reconcile.Request{NamespacedName: r.Secret}
	atStart, toReq := singleton(req)
	isKeySecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Secret.Namespace && o.GetName() == r.Secret.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("signingkeys").
		WatchesRawSource(atStart).
		Watches(&corev1.Secret{}, toReq, builder.WithPredicates(isKeySecret)).
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

// Reconcile moves the signing keys through their life (next, active, retired, gone) as
// signingkeys.Plan decides, and the status MAC keys as statusmac.Plan decides, and requeues for
// the moment a plan next changes. A rotation that the Secret's annotations ask for is decided
// with them and recorded as done in the same write, so that a crash does both or neither; an
// emergency replaces the status keys too (statusmac.Replace), since whoever copied the Secret
// has them. A missing Secret is the empty one, in which both plans start with an active key:
// writing it creates it.
func (r *SigningKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx).WithValues("secret", r.Secret.String())
	now := r.Clock.Now()
	secret, err := readOwnSecret(ctx, r.Client, r.APIReader, r.Secret)
	if err != nil {
		return ctrl.Result{}, err
	}
	set, status, err := keySets(secret)
	if err != nil {
		logger.Error(err, "the signing-key Secret is damaged; it is left as it is and the token server keeps the keys it had")
		return ctrl.Result{RequeueAfter: damagedKeysRecheck}, nil
	}
	fleet, err := r.fleet(ctx, status)
	if err != nil {
		return ctrl.Result{}, err
	}
	ask := keyring.AskNone
	if secret != nil {
		ask = keyring.AskOf(secret.Annotations)
	}
	r.ignored.report(logger, secret)
	plan := signingkeys.Plan(set, r.Policy, ask, now)
	statusPlan := statusmac.Plan(status, fleet, r.StatusKeyPeriod, now)
	if ask == keyring.AskEmergency {
		statusPlan = statusmac.Replace(status, fleet, r.StatusKeyPeriod, now)
	}
	secret = editOwnSecret(secret, r.Secret, corev1.SecretTypeOpaque)
	if labels := r.labels(secret.Labels); !plan.Empty() || !statusPlan.Empty() || !maps.Equal(labels, secret.Labels) || ask != keyring.AskNone {
		if set, err = signingkeys.Apply(set, plan, r.Policy, now); err != nil {
			return ctrl.Result{}, err
		}
		if !statusPlan.Empty() {
			if status, err = statusmac.Apply(status, statusPlan, now); err != nil {
				return ctrl.Result{}, err
			}
		}
		secret.Labels = labels
		secret.Annotations = keyring.Acted(secret.Annotations)
		if err := r.write(ctx, secret, set, status); apierrors.IsConflict(err) {
			// The cache had not seen the last write yet (an annotation, say): decide again on
			// the newer version.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		} else if err != nil {
			return ctrl.Result{}, err
		}
		if ask != keyring.AskNone {
			logger.Info("signing keys: a rotation was asked for", "mode", string(ask))
		}
		for _, why := range plan.Why {
			logger.Info("signing keys: " + why)
		}
		for _, why := range statusPlan.Why {
			logger.Info("status keys: " + why)
		}
		// What the plans say after this step is when to look again.
		plan = signingkeys.Plan(set, r.Policy, keyring.AskNone, now)
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

// keySets parses the Secret's signing keys and status keys (nil when it has none yet). A Secret
// that does not exist holds no keys; one that exists must hold signing keys that parse, since
// the manager never overwrites keys it cannot read: they may be the only copy.
func keySets(secret *corev1.Secret) (*signingkeys.Set, *statusmac.Set, error) {
	if secret == nil {
		return &signingkeys.Set{}, nil, nil
	}
	set, err := signingkeys.Parse(secret.Data[signingkeys.DataKey])
	if err != nil {
		return nil, nil, err
	}
	raw, ok := secret.Data[statusmac.DataKey]
	if !ok {
		return set, nil, nil
	}
	status, err := statusmac.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("the status keys: %w", err)
	}
	return set, status, nil
}

// write stores both key sets in the Secret: it creates the Secret, or updates it.
func (r *SigningKeyReconciler) write(ctx context.Context, secret *corev1.Secret, set *signingkeys.Set, status *statusmac.Set) error {
	data, err := set.Encode()
	if err != nil {
		return err
	}
	statusData, err := status.Encode()
	if err != nil {
		return err
	}
	secret.Data[signingkeys.DataKey] = data
	secret.Data[statusmac.DataKey] = statusData
	created, err := writeOwnSecret(ctx, r.Client, secret)
	if created && err == nil {
		log.FromContext(ctx).Info("created the signing-key Secret", "secret", r.Secret.String(), "kid", set.Active().KID, "alg", set.Active().Algorithm)
	}
	return err
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
	return componentLabels(existing, m2mv1alpha1.SigningKeyComponent)
}
