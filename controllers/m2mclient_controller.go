// Package controllers holds the manager's reconcilers. Decisions are pure functions (DecideSecret,
// RotationDue, ResolveClientID, TrustStatus, each in a file of its own); the reconcilers fetch,
// call them, and act. An M2MClient is reconciled by a list of named steps (m2mclient_steps.go),
// one file per step.
package controllers

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/sourcewatch"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const (
	// templateKeysAnnotation records which labels and annotations the manager copied from
	// spec.secret, so that a key removed from the spec is removed from the Secret, while keys
	// that others add to the Secret are left alone.
	templateKeysAnnotation = "m2m.dev/template-keys"

	// clientIDIndex indexes M2MClients by the client ID they claim.
	clientIDIndex = "m2m.dev/client-id"

	// boundClientIndex indexes ClientIDBindings by the "namespace/name" of the M2MClient they
	// bind an ID to.
	boundClientIndex = "m2m.dev/bound-client"

	// conflictRetry is how soon a reconcile that lost an optimistic-lock race runs again.
	conflictRetry = 100 * time.Millisecond

	// foreignSecretRecheck is how often a client whose Secret name is taken looks again. The
	// cache sees only the manager's own Secrets, so no event says when the other one is gone.
	foreignSecretRecheck = 10 * time.Second
)

// M2MClientReconciler keeps each M2MClient's credentials Secret and status.acceptedSecrets in
// agreement, in an order that never leaves a Secret carrying a secret the token server rejects.
type M2MClientReconciler struct {
	client.Client
	// APIReader reads Secrets that the label-filtered cache cannot see: a conflicting Secret, or
	// one whose labels were removed.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// IssuerURL is the token server's issuer; the Secret's issuer derives from it, and so does
	// its token_url unless InClusterURL is set.
	IssuerURL string
	// InClusterURL, when not empty, is where pods reach the token server (its Service) while the
	// issuer names a public door: token_url derives from it, and public_token_url from the issuer.
	InClusterURL string
	// KeySecret is the signing-key Secret, which also holds the keys that authenticate status.
	KeySecret types.NamespacedName
	// CASecret, when set, is the Secret whose CABundleKey holds the CA bundle that signs the
	// token server's certificate (the manager's CA Secret, or the Secret cert-manager writes):
	// with an https issuer, the bundle goes into every credentials Secret as ca.crt.
	CASecret    types.NamespacedName
	CABundleKey string
	// WatchNamespaces are the namespaces whose clients this manager reconciles; empty means all.
	WatchNamespaces []string

	// statusKeys caches the parsed status keys by the Secret's resourceVersion.
	statusKeys atomic.Pointer[loadedStatusKeys]

	// pending holds, by M2MClient namespace and name, a secret whose hash is accepted but whose
	// Secret write has not succeeded yet, so that a retry writes the same secret instead of accepting another hash
	// each time (status would grow until it could not be written). It lives in memory only: after
	// a restart, the unwritten hash merely expires (ActionResumeRotation).
	pending sync.Map
	// Sources watches the source Secrets that clients name (spec.authentication.source); nil
	// refuses every source.
	Sources *sourcewatch.Watcher

	// ignored holds, by M2MClient namespace and name, the ignoredAnnotations last announced
	// (boundValues), so that each is announced once and not on every reconcile.
	ignored sync.Map
}

// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients,verbs=get;list;watch
// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// ClientIDBindings are cluster-scoped, so their rule is a ClusterRole of its own
// (config/rbac/clientidbinding_role.yaml) that stays bound cluster-wide when the manager's other
// rules are narrowed to namespaces.

// clientIDOf is the client ID an M2MClient claims, for the index: its status, else its spec.
func clientIDOf(obj *m2mv1alpha1.M2MClient) string {
	if obj.Status.ClientID != "" {
		return obj.Status.ClientID
	}
	return obj.Spec.ClientID
}

func indexClientID(o client.Object) []string {
	if id := clientIDOf(o.(*m2mv1alpha1.M2MClient)); id != "" {
		return []string{id}
	}
	return nil
}

func indexBoundClient(o client.Object) []string {
	b := o.(*m2mv1alpha1.ClientIDBinding)
	return []string{b.Spec.Namespace + "/" + b.Spec.Name}
}

// SetupWithManager registers the indexes and the controller.
func (r *M2MClientReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &m2mv1alpha1.M2MClient{}, clientIDIndex, indexClientID); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &m2mv1alpha1.ClientIDBinding{}, boundClientIndex, indexBoundClient); err != nil {
		return err
	}
	isKeySecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.KeySecret.Namespace && o.GetName() == r.KeySecret.Name
	})
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Sources != nil {
		// A source Secret has no label the cache selects; its own watch tells its clients.
		events := make(chan event.GenericEvent, 1024)
		r.Sources.Notify = func(key types.NamespacedName) {
			events <- event.GenericEvent{Object: &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
		}
		if err := mgr.Add(r.Sources); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{}))
	}
	return b.
		For(&m2mv1alpha1.M2MClient{}).
		Owns(&corev1.Secret{}).
		// The Secret of a client with spec.secret.deletionPolicy Orphan has no owner reference:
		// its label names the client.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clientOfOrphan)).
		// When a client that holds a client ID goes away or changes, the clients that wait for
		// that ID must look again.
		Watches(&m2mv1alpha1.M2MClient{}, handler.EnqueueRequestsFromMapFunc(r.peersWithSameClientID)).
		// A released binding frees its ID for the clients that wait for it, and a deleted binding
		// of a live client is made again.
		Watches(&m2mv1alpha1.ClientIDBinding{}, handler.EnqueueRequestsFromMapFunc(r.clientsOfBinding)).
		// A new status key (or enforcement) means every status is sealed again.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.allClients),
			builder.WithPredicates(isKeySecret, predicate.Funcs{UpdateFunc: statusKeysChanged})).
		// A new CA bundle goes into every credentials Secret.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.allClients),
			builder.WithPredicates(caBundleEvents(r.CASecret, r.CABundleKey)...)).
		WithOptions(opts).
		Named("m2mclient").
		Complete(r)
}

func (r *M2MClientReconciler) peersWithSameClientID(ctx context.Context, o client.Object) []reconcile.Request {
	obj, ok := o.(*m2mv1alpha1.M2MClient)
	if !ok {
		return nil
	}
	id := clientIDOf(obj)
	if id == "" {
		return nil
	}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{clientIDIndex: id}); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if list.Items[i].UID != obj.UID {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

func (r *M2MClientReconciler) clientsOfBinding(ctx context.Context, o client.Object) []reconcile.Request {
	b, ok := o.(*m2mv1alpha1.ClientIDBinding)
	if !ok {
		return nil
	}
	var reqs []reconcile.Request
	// Bindings are cluster-scoped: those of namespaces another install watches (or none) name
	// clients outside this manager's cache, which it could only fail to reconcile.
	if len(r.WatchNamespaces) == 0 || slices.Contains(r.WatchNamespaces, b.Spec.Namespace) {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: b.Spec.Namespace, Name: b.Spec.Name}})
	}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{clientIDIndex: b.Spec.ClientID}); err != nil {
		return reqs
	}
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// clientOfOrphan is the client that the label of a Secret without a controller names, in a
// namespace this manager watches.
func (r *M2MClientReconciler) clientOfOrphan(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[m2mv1alpha1.ClientLabel]
	if name == "" || metav1.GetControllerOf(o) != nil || (len(r.WatchNamespaces) > 0 && !slices.Contains(r.WatchNamespaces, o.GetNamespace())) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

func (r *M2MClientReconciler) allClients(ctx context.Context, _ client.Object) []reconcile.Request {
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// statusKeysChanged reports whether an update of the signing-key Secret changed the status keys.
func statusKeysChanged(e event.UpdateEvent) bool {
	oldS, ok1 := e.ObjectOld.(*corev1.Secret)
	newS, ok2 := e.ObjectNew.(*corev1.Secret)
	return !ok1 || !ok2 || !bytes.Equal(oldS.Data[statusmac.DataKey], newS.Data[statusmac.DataKey])
}

// caBundleEvents select the events of the Secret caSecret that may change the CA bundle under
// key: all but its updates that leave the bundle as it was. With no caSecret, none.
func caBundleEvents(caSecret types.NamespacedName, key string) []predicate.Predicate {
	isCASecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return caSecret.Name != "" && client.ObjectKeyFromObject(o) == caSecret
	})
	bundleChanged := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		oldS, ok1 := e.ObjectOld.(*corev1.Secret)
		newS, ok2 := e.ObjectNew.(*corev1.Secret)
		return !ok1 || !ok2 || !bytes.Equal(oldS.Data[key], newS.Data[key])
	}}
	return []predicate.Predicate{isCASecret, bundleChanged}
}

// Reconcile makes the Secret and status agree: fetch, deletion, then the steps of clientSteps.
// Status is written once at the end (and earlier only where crash safety needs it).
func (r *M2MClientReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	obj := &m2mv1alpha1.M2MClient{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.pending.Delete(req.NamespacedName)
			r.ignored.Delete(req.NamespacedName)
			r.Sources.Release(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.pending.Delete(req.NamespacedName)
		r.ignored.Delete(req.NamespacedName)
		r.Sources.Release(req.NamespacedName)
		// The garbage collector deletes the Secret through its owner reference; the Secret of
		// spec.secret.deletionPolicy Orphan has none, and nothing needs doing for it to stay, so
		// deletion needs no finalizer and works whether the manager runs or not.
		return ctrl.Result{}, nil
	}

	keys, err := r.loadStatusKeys(ctx)
	if errors.Is(err, errNoStatusKeys) {
		// At start, before the signing-key controller's first write: an expected state, not an
		// error. That write wakes every client (statusKeysChanged); the requeue is a backstop.
		log.FromContext(ctx).V(1).Info("waiting for the status keys")
		return ctrl.Result{RequeueAfter: statusKeysWait}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	c := &clientReconcile{
		r: r, obj: obj, keys: keys, kind: credentials.KindOf(obj), now: r.Clock.Now(),
		status: &statusPatcher{client: r.Client, obj: obj, base: obj.DeepCopy(), keys: keys},
	}
	readyBefore := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady).DeepCopy()
	defer func() {
		r.summarize(obj, readyBefore, retErr)
		if err := c.status.patch(ctx); err != nil {
			retErr = errors.Join(retErr, err)
		} else {
			for _, announce := range c.persisted {
				announce()
			}
		}
		if apierrors.IsConflict(retErr) {
			// A newer version of the object is on its way through the cache; reconcile that.
			log.FromContext(ctx).V(1).Info("conflict; retrying with a fresh copy", "error", retErr.Error())
			res, retErr = ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
	}()
	return c.run(ctx)
}

// summarize sets what every reconcile reports, whatever step it ended in (with reconcileErr when
// one failed), and fires the event of a Ready condition that turned false for a new reason. The
// kstatus conditions follow Ready and fire no events of their own: Stalled turns True exactly
// when Ready turns False, which already has one.
func (r *M2MClientReconciler) summarize(obj *m2mv1alpha1.M2MClient, readyBefore *metav1.Condition, reconcileErr error) {
	obj.Status.ObservedGeneration = obj.Generation
	obj.Status.SecretName = secretName(obj)
	obj.Status.State = m2mv1alpha1.ClientStateActive
	if obj.Spec.Disabled {
		obj.Status.State = m2mv1alpha1.ClientStateDisabled
	}
	if ready := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady); ready != nil {
		ready.ObservedGeneration = obj.Generation
		if ready.Status == metav1.ConditionFalse && (readyBefore == nil || readyBefore.Reason != ready.Reason) {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ready.Reason, "Reconcile", "%s", ready.Message)
		}
	}
	setHealth(obj, DecideHealth(meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady), reconcileErr))
}
