package controllers

import (
	"context"
	"maps"
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
		Complete(r)
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update

// Reconcile creates the Secret with an active key when it is missing, and moves the keys through
// their life (next, active, retired, gone) as signingkeys.Plan decides. It requeues for the
// moment the plan next changes.
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
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Secret.Namespace, Name: r.Secret.Name, Labels: r.labels(nil)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{signingkeys.DataKey: data},
		}
		if err := r.Create(ctx, secret); err != nil {
			return ctrl.Result{}, err
		}
		logger.Info("created the signing-key Secret", "kid", set.Active().KID, "alg", set.Active().Algorithm)
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
	plan := signingkeys.Plan(set, r.Policy, now)
	labels := r.labels(secret.Labels)
	if !plan.Empty() || !maps.Equal(labels, secret.Labels) {
		if !plan.Empty() {
			if set, err = signingkeys.Apply(set, plan, r.Policy, now); err != nil {
				return ctrl.Result{}, err
			}
		}
		data, err := set.Encode()
		if err != nil {
			return ctrl.Result{}, err
		}
		secret.Labels = labels
		secret.Data[signingkeys.DataKey] = data
		if err := r.Update(ctx, secret); err != nil {
			return ctrl.Result{}, err
		}
		for _, why := range plan.Why {
			logger.Info("signing keys: " + why)
		}
		// What the plan says after this step is when to look again.
		plan = signingkeys.Plan(set, r.Policy, now)
	}
	if plan.WakeAt.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(plan.WakeAt.Sub(now), time.Millisecond)}, nil
}

func (r *SigningKeyReconciler) labels(existing map[string]string) map[string]string {
	out := maps.Clone(existing)
	if out == nil {
		out = map[string]string{}
	}
	out[m2mv1alpha1.ManagedByLabel] = m2mv1alpha1.ManagedByValue
	out[ComponentLabel] = SigningKeyComponent
	return out
}
