// Package controllers holds the manager's reconcilers. Decisions are pure functions in policy.go;
// the reconcilers fetch, call them, and act.
package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const (
	// templateKeysAnnotation records which labels and annotations the manager copied from
	// spec.secret, so that a key removed from the spec is removed from the Secret, while keys
	// that others add to the Secret are left alone.
	templateKeysAnnotation = "m2m.dev/template-keys"

	// ClientIDIndex indexes M2MClients by the client ID they claim.
	ClientIDIndex = "m2m.dev/client-id"

	// BoundClientIndex indexes ClientIDBindings by the "namespace/name" of the M2MClient they
	// bind an ID to.
	BoundClientIndex = "m2m.dev/bound-client"

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
	// IssuerURL is the token server's issuer; the Secret's issuer and token_url derive from it.
	IssuerURL string
	// KeySecret is the signing-key Secret, which also holds the keys that authenticate status.
	KeySecret types.NamespacedName
	// CASecret, when set, is the Secret whose CABundleKey holds the CA bundle that signs the
	// token server's certificate (the manager's CA Secret, or the Secret cert-manager writes):
	// with an https issuer, the bundle goes into every credentials Secret as ca.crt.
	CASecret    types.NamespacedName
	CABundleKey string

	// statusKeys caches the parsed status keys by the Secret's resourceVersion.
	statusKeys atomic.Pointer[loadedStatusKeys]

	// pending holds, by M2MClient namespace and name, a secret whose hash is accepted but whose
	// Secret write has not succeeded yet, so that a retry writes the same secret instead of accepting another hash
	// each time (status would grow until it could not be written). It lives in memory only: after
	// a restart, the unwritten hash merely expires (ActionResumeRotation).
	pending sync.Map
}

type loadedStatusKeys struct {
	resourceVersion string
	set             *statusmac.Set
}

// pendingSecret is a secret issued and accepted but not yet written, for the object of uid.
type pendingSecret struct {
	uid         types.UID
	hash, value string
}

// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients,verbs=get;list;watch
// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=m2m.dev,resources=m2mclients/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// ClientIDBindings are cluster-scoped, so their rule is a ClusterRole of its own
// (config/rbac/clientidbinding_role.yaml) that stays bound cluster-wide when the manager's other
// rules are narrowed to namespaces.

// ClientIDOf is the client ID an M2MClient claims, for the index: its status, else its spec.
func ClientIDOf(obj *m2mv1alpha1.M2MClient) string {
	if obj.Status.ClientID != "" {
		return obj.Status.ClientID
	}
	return obj.Spec.ClientID
}

func indexClientID(o client.Object) []string {
	if id := ClientIDOf(o.(*m2mv1alpha1.M2MClient)); id != "" {
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
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &m2mv1alpha1.M2MClient{}, ClientIDIndex, indexClientID); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &m2mv1alpha1.ClientIDBinding{}, BoundClientIndex, indexBoundClient); err != nil {
		return err
	}
	isKeySecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.KeySecret.Namespace && o.GetName() == r.KeySecret.Name
	})
	isCASecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return r.CASecret.Name != "" && client.ObjectKeyFromObject(o) == r.CASecret
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&m2mv1alpha1.M2MClient{}).
		Owns(&corev1.Secret{}).
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
			builder.WithPredicates(isCASecret, predicate.Funcs{UpdateFunc: r.bundleChanged})).
		WithOptions(opts).
		Named("m2mclient").
		Complete(r)
}

func (r *M2MClientReconciler) peersWithSameClientID(ctx context.Context, o client.Object) []reconcile.Request {
	obj, ok := o.(*m2mv1alpha1.M2MClient)
	if !ok {
		return nil
	}
	id := ClientIDOf(obj)
	if id == "" {
		return nil
	}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{ClientIDIndex: id}); err != nil {
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
	reqs := []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: b.Spec.Namespace, Name: b.Spec.Name}}}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{ClientIDIndex: b.Spec.ClientID}); err != nil {
		return reqs
	}
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
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

// bundleChanged reports whether an update of the CA Secret changed the bundle.
func (r *M2MClientReconciler) bundleChanged(e event.UpdateEvent) bool {
	oldS, ok1 := e.ObjectOld.(*corev1.Secret)
	newS, ok2 := e.ObjectNew.(*corev1.Secret)
	return !ok1 || !ok2 || !bytes.Equal(oldS.Data[r.CABundleKey], newS.Data[r.CABundleKey])
}

// caBundle is what credentials Secrets carry as ca.crt: the CA bundle when the manager issues
// the token server's certificate and the issuer is https, else nil (no ca.crt).
func (r *M2MClientReconciler) caBundle(ctx context.Context) ([]byte, error) {
	if r.CASecret.Name == "" || !strings.HasPrefix(r.IssuerURL, "https://") {
		return nil, nil
	}
	s := &corev1.Secret{}
	err := r.Get(ctx, r.CASecret, s)
	if apierrors.IsNotFound(err) {
		// The cache holds the manager's labelled Secrets only; another issuer's Secret may lack
		// the label.
		err = r.APIReader.Get(ctx, r.CASecret, s)
	}
	if apierrors.IsNotFound(err) || (err == nil && len(s.Data[r.CABundleKey]) == 0) {
		return nil, fmt.Errorf("%w: Secret %s has no %s (with --ca-bundle-secret, the issuer must put its CA there)", errNoCABundle, r.CASecret, r.CABundleKey)
	}
	if err != nil {
		return nil, err
	}
	return s.Data[r.CABundleKey], nil
}

// errNoCABundle says that the CA bundle is not there (yet); the reconcile is retried, so that no
// credentials Secret for an https issuer is written without the CA to trust it.
var errNoCABundle = errors.New("no CA bundle for the credentials Secrets")

// errNoStatusKeys says that the status keys are not loaded yet; the reconcile is retried.
var errNoStatusKeys = errors.New("the status keys are not in the signing-key Secret yet")

// loadStatusKeys returns the status keys from the cached signing-key Secret.
func (r *M2MClientReconciler) loadStatusKeys(ctx context.Context) (*statusmac.Set, error) {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, r.KeySecret, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errNoStatusKeys
		}
		return nil, err
	}
	if l := r.statusKeys.Load(); l != nil && l.resourceVersion == secret.ResourceVersion {
		return l.set, nil
	}
	raw, ok := secret.Data[statusmac.DataKey]
	if !ok {
		return nil, errNoStatusKeys
	}
	set, err := statusmac.Parse(raw)
	if err != nil {
		return nil, err
	}
	if set.Active() == nil {
		return nil, errNoStatusKeys
	}
	r.statusKeys.Store(&loadedStatusKeys{resourceVersion: secret.ResourceVersion, set: set})
	return set, nil
}

// Reconcile makes the Secret and status agree: fetch, deletion, trust, client ID, Secret, expiry.
func (r *M2MClientReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	logger := log.FromContext(ctx)

	obj := &m2mv1alpha1.M2MClient{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.pending.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.pending.Delete(req.NamespacedName)
		// The Secret has an owner reference; the garbage collector deletes it.
		return ctrl.Result{}, nil
	}

	keys, err := r.loadStatusKeys(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := &statusPatcher{client: r.Client, obj: obj, base: obj.DeepCopy(), keys: keys}
	readyBefore := meta.FindStatusCondition(obj.Status.Conditions, m2mv1alpha1.ConditionReady).DeepCopy()
	defer func() {
		obj.Status.ObservedGeneration = obj.Generation
		obj.Status.SecretName = SecretName(obj)
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
		if err := p.patch(ctx); err != nil {
			retErr = errors.Join(retErr, err)
		}
		if apierrors.IsConflict(retErr) {
			// A newer version of the object is on its way through the cache; reconcile that.
			logger.V(1).Info("conflict; retrying with a fresh copy", "error", retErr.Error())
			res, retErr = ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
	}()

	now := r.Clock.Now()
	r.trust(ctx, obj, keys, now)
	secret, err := r.getSecret(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	res, err = r.reconcileSecret(ctx, obj, p, keys, secret, now)
	if errors.Is(err, errUnseenSecret) {
		// A Secret of that name exists that the cache does not hold; decide again with it.
		if secret, err = r.directSecret(ctx, obj); err != nil {
			return ctrl.Result{}, err
		}
		res, err = r.reconcileSecret(ctx, obj, p, keys, secret, now)
	}
	return res, err
}

// trust keeps of obj's status what the manager vouches for (TrustStatus). What it discards was
// written by someone else; the steps after it rebuild status as if it had been lost.
func (r *M2MClientReconciler) trust(ctx context.Context, obj *m2mv1alpha1.M2MClient, keys *statusmac.Set, now time.Time) {
	t := TrustStatus(obj, keys, now)
	if t.ClientID != obj.Status.ClientID {
		obj.Status.ClientIDMAC = ""
	}
	obj.Status.ClientID, obj.Status.AcceptedSecrets = t.ClientID, t.Entries
	if t.Discarded > 0 {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, EventStatusDiscarded, "Authenticate",
			"%d status field(s) the manager did not write (no valid MAC) were discarded; credentials are rebuilt from the client's binding and Secret", t.Discarded)
	}
	if t.Migrated > 0 {
		log.FromContext(ctx).V(1).Info("authenticating status written before MACs", "entries", t.Migrated)
	}
}

// errUnseenSecret says that creating the Secret failed because one of that name exists.
var errUnseenSecret = errors.New("a Secret of that name exists outside the cache")

// reconcileSecret resolves the client ID, decides what the Secret needs, and does it.
func (r *M2MClientReconciler) reconcileSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient, p *statusPatcher, keys *statusmac.Set, secret *corev1.Secret, now time.Time) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var bound []string
	var err error
	if obj.Spec.ClientID == "" && obj.Status.ClientID == "" {
		// Only a client with no ID of its own looks for one that a binding gives it.
		if bound, err = r.boundIDs(ctx, obj); err != nil {
			return ctrl.Result{}, err
		}
	}
	id, source := ResolveClientID(obj, secret, bound)
	if source == IDNew {
		if id, err = credentials.NewClientID(); err != nil {
			return ctrl.Result{}, err
		}
	}
	// The binding exists before status names the ID, so that a crash between the two leaves
	// an ID that is this client's, and never one that another client can still take.
	if holder, err := r.claim(ctx, obj, keys, id); err != nil {
		return ctrl.Result{}, err
	} else if holder == "" {
		p.vouched = true
	} else {
		// Withhold the ID, and the secrets that went with it, from status, so that the token
		// server never sees two clients with it.
		obj.Status.ClientID, obj.Status.AcceptedSecrets = "", nil
		r.setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonDuplicateClientID,
			fmt.Sprintf("client ID %q is bound to %s; an administrator can release it by deleting ClientIDBinding %s", id, holder, m2mv1alpha1.ClientIDBindingName(id)))
		return ctrl.Result{}, nil
	}

	kind := credentials.KindOf(obj)
	if kind == nil {
		return r.reconcileWithoutSecret(ctx, obj, secret, id, now)
	}
	decision := DecideSecret(obj, secret, now)
	logger.V(1).Info("decided", "action", decision.Action, "why", decision.Why)
	switch decision.Action {
	case ActionConflict:
		r.setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict, decision.Why)
		return ctrl.Result{RequeueAfter: foreignSecretRecheck}, nil
	case ActionRefuseWeak:
		r.setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonWeakSecret, decision.Why)
		return ctrl.Result{}, nil
	}
	obj.Status.ClientID = id
	switch {
	case decision.Action.Issues():
		if secret, err = r.issue(ctx, obj, kind, p, secret, id, now, decision); err != nil {
			return ctrl.Result{}, err
		}
	case decision.Action == ActionRecoverStatus || decision.Action == ActionAdopt:
		// A secret written into the Secret is accepted even when status is full (a rotation
		// would wait instead): the Secret already carries it, and a status over the schema's
		// limit could not be written at all.
		entry, err := kind.Entry(decision.Secret, now)
		if err != nil {
			return ctrl.Result{}, err // unreachable: DecideSecret refuses a key that does not parse
		}
		obj.Status.AcceptedSecrets = Accept(MakeRoom(obj.Status.AcceptedSecrets, MaxAcceptedSecrets), entry)
		if err := p.patch(ctx); err != nil {
			return ctrl.Result{}, err
		}
		r.completeRotation(obj, kind, decision.Secret, now)
		reason := EventSecretAdopted
		if decision.Action == ActionRecoverStatus {
			reason = EventStatusRecovered
		}
		r.Recorder.Eventf(obj, secret, corev1.EventTypeNormal, reason, "Adopt", "%s", decision.Why)
	case decision.Action == ActionCompleteRotation:
		r.completeRotation(obj, kind, string(secret.Data[kind.DataKey()]), now)
	case decision.Rotation == RotationDeferred:
		logger.Info("rotation deferred", "why", decision.Why)
	}

	// The Secret now carries an accepted secret; make the rest of it match the spec.
	if _, err := r.writeSecret(ctx, obj, secret, id, string(secret.Data[kind.DataKey()])); err != nil {
		return ctrl.Result{}, r.secretWriteFailed(obj, err)
	}

	kept, removed, nextExpiry := Prune(obj.Status.AcceptedSecrets, now)
	if removed > 0 {
		obj.Status.AcceptedSecrets = kept
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, EventSecretExpired, "Expire", "%d previous secret(s) reached the end of the grace period and are no longer accepted", removed)
	}
	r.setReady(obj, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady, fmt.Sprintf("Secret %s holds accepted credentials", SecretName(obj)))
	obj.Status.NextRotationTime = nil
	wake := nextExpiry
	if next := NextRotation(obj); !next.IsZero() {
		t := metav1.NewTime(next)
		obj.Status.NextRotationTime = &t
		if wake.IsZero() || next.Before(wake) {
			wake = next
		}
	}
	if !wake.IsZero() {
		// Requeue for the exact moment the next expiry or rotation is due; never poll.
		return ctrl.Result{RequeueAfter: max(wake.Sub(now), time.Millisecond)}, nil
	}
	return ctrl.Result{}, nil
}

// reconcileWithoutSecret keeps the Secret of a client that takes no client secret
// (spec.authentication.clientSecret false): client_id, token_url and issuer, and no
// client_secret. Secrets accepted before get the grace period, so that pods that still send one
// keep working until they switch, and then none is accepted.
func (r *M2MClientReconciler) reconcileWithoutSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, id string, now time.Time) (ctrl.Result, error) {
	obj.Status.ClientID = id
	// The grace period starts first, whatever happens to the Secret: turning secrets off must end
	// the current one even when the Secret cannot be written.
	if Unexpiring(obj.Status.AcceptedSecrets) > 0 {
		obj.Status.AcceptedSecrets = ExpireOthers(obj.Status.AcceptedSecrets, "", now, GracePeriod(obj))
		r.Recorder.Eventf(obj, secret, corev1.EventTypeNormal, EventSecretRetired, "Retire",
			"spec.authentication.clientSecret is false: the client secret was removed from Secret %s and is accepted until %s", SecretName(obj), now.Add(GracePeriod(obj)).UTC().Format(time.RFC3339))
	}
	if d, ok := foreignSecret(&secretView{obj: obj, secret: secret}); ok {
		r.setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretConflict, d.Why)
		return ctrl.Result{RequeueAfter: foreignSecretRecheck}, nil
	}
	if _, err := r.writeSecret(ctx, obj, secret, id, ""); err != nil {
		return ctrl.Result{}, r.secretWriteFailed(obj, err)
	}
	kept, _, nextExpiry := Prune(obj.Status.AcceptedSecrets, now)
	obj.Status.AcceptedSecrets = kept
	obj.Status.NextRotationTime = nil
	r.setReady(obj, metav1.ConditionTrue, m2mv1alpha1.ReasonCredentialsReady,
		fmt.Sprintf("Secret %s holds the client ID; the client authenticates without a secret (spec.authentication)", SecretName(obj)))
	if !nextExpiry.IsZero() {
		return ctrl.Result{RequeueAfter: max(nextExpiry.Sub(now), time.Millisecond)}, nil
	}
	return ctrl.Result{}, nil
}

// issue gives the client a new secret (to generate, rotate or resume) in the crash-safe order:
// (1) accept its hash and persist the status, (2) write the Secret, (3) start the grace period of
// the previous secrets, which the end of the reconcile persists. A crash after (1) leaves a hash
// that no Secret carries (ActionResumeRotation issues again); after (2), secrets without expiry
// (ActionCompleteRotation). No Secret ever carries a secret whose hash is not accepted.
func (r *M2MClientReconciler) issue(ctx context.Context, obj *m2mv1alpha1.M2MClient, kind credentials.Kind, p *statusPatcher, secret *corev1.Secret, id string, now time.Time, d SecretDecision) (*corev1.Secret, error) {
	value, err := r.pendingOrNew(obj, kind)
	if err != nil {
		return nil, err
	}
	first := len(obj.Status.AcceptedSecrets) == 0
	before := obj.Status.DeepCopy()
	if first || d.Action == ActionRotate {
		// Values present at creation ask for no rotation. A rotation records the values it acts
		// on with its hash, so that a crash resumes it instead of starting another for them.
		obj.Status.LastRotationTrigger = obj.Spec.Rotation.Trigger
		obj.Status.LastRotateAnnotation = obj.Annotations[m2mv1alpha1.RotateAnnotation]
	}
	entry, err := kind.Entry(value, now)
	if err != nil {
		return nil, err
	}
	obj.Status.AcceptedSecrets = Accept(obj.Status.AcceptedSecrets, entry)
	if err := p.patch(ctx); err != nil {
		return nil, err
	}
	key := client.ObjectKeyFromObject(obj)
	r.pending.Store(key, pendingSecret{uid: obj.UID, hash: entry.Hash, value: value})
	written, err := r.writeSecret(ctx, obj, secret, id, value)
	if secret == nil && apierrors.IsAlreadyExists(err) {
		r.pending.Delete(key)
		// The secret was written nowhere, so its hash can go again.
		obj.Status.AcceptedSecrets = before.AcceptedSecrets
		obj.Status.LastRotationTrigger, obj.Status.LastRotateAnnotation = before.LastRotationTrigger, before.LastRotateAnnotation
		if err := p.patch(ctx); err != nil {
			return nil, err
		}
		return nil, errUnseenSecret
	}
	if err != nil {
		return nil, r.secretWriteFailed(obj, err)
	}
	r.pending.Delete(key)
	r.completeRotation(obj, kind, value, now)
	switch {
	case first:
		r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, EventCredentialsCreated, "Create", "client %s: credentials written to Secret %s", id, written.Name)
	case d.Action == ActionGenerate:
		Rotations.WithLabelValues("Recreated").Inc()
		r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, EventSecretRecreated, "Rotate", "%s: a new secret was written; the previous one expires after %s", d.Why, GracePeriod(obj))
	default:
		Rotations.WithLabelValues(string(d.Rotation)).Inc()
		r.Recorder.Eventf(obj, written, corev1.EventTypeNormal, EventRotated, "Rotate",
			"rotated (%s): %s; the previous secret is accepted until %s", d.Rotation, d.Why, now.Add(GracePeriod(obj)).UTC().Format(time.RFC3339))
	}
	return written, nil
}

// pendingOrNew returns the credential of an earlier attempt whose hash status still accepts
// without expiry (its write failed), if it is of the kind the client takes, else a new one.
func (r *M2MClientReconciler) pendingOrNew(obj *m2mv1alpha1.M2MClient, kind credentials.Kind) (string, error) {
	key := client.ObjectKeyFromObject(obj)
	if v, ok := r.pending.Load(key); ok {
		if pend := v.(pendingSecret); pend.uid == obj.UID {
			for _, e := range obj.Status.AcceptedSecrets {
				if e.Hash == pend.hash && e.ExpiresAt == nil && kind.Fingerprint(pend.value) == pend.hash && kind.Problem(pend.value) == "" {
					return pend.value, nil
				}
			}
		}
		r.pending.Delete(key)
	}
	return kind.Issue()
}

// secretWriteFailed says on the Ready condition that the Secret could not be written, with the
// API server's reason (an immutable Secret, a quota, a webhook), and returns err for a retry.
// A conflict is a race, retried at once, and says nothing.
func (r *M2MClientReconciler) secretWriteFailed(obj *m2mv1alpha1.M2MClient, err error) error {
	if !apierrors.IsConflict(err) {
		RotationFailures.Inc()
		r.setReady(obj, metav1.ConditionFalse, m2mv1alpha1.ReasonSecretWriteFailed,
			fmt.Sprintf("writing Secret %s failed (%s): %v; the manager retries with the same secret", SecretName(obj), apierrors.ReasonForError(err), err))
	}
	return err
}

// completeRotation starts the grace period of every credential but current.
func (r *M2MClientReconciler) completeRotation(obj *m2mv1alpha1.M2MClient, kind credentials.Kind, current string, now time.Time) {
	hash := kind.Fingerprint(current)
	before := obj.Status.AcceptedSecrets
	obj.Status.AcceptedSecrets = ExpireOthers(before, hash, now, GracePeriod(obj))
	if !equality.Semantic.DeepEqual(before, obj.Status.AcceptedSecrets) || obj.Status.LastRotationTime == nil {
		t := metav1.NewTime(now)
		obj.Status.LastRotationTime = &t
	}
}

func (r *M2MClientReconciler) setReady(obj *m2mv1alpha1.M2MClient, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type:               m2mv1alpha1.ConditionReady,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: obj.Generation,
	})
}

// getSecret returns the client's Secret, or nil when there is none. The cache holds only Secrets
// with the managed-by label, so a miss there is confirmed with a direct read, so that an
// unlabelled Secret of that name is seen (and never overwritten). A brand-new client skips that
// read: creating its Secret fails if one of that name exists, and then it reads (errUnseenSecret).
func (r *M2MClientReconciler) getSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient) (*corev1.Secret, error) {
	if Unexpiring(obj.Status.AcceptedSecrets) > 1 {
		// A rotation is in progress: which step it is in depends on what the Secret carries, so
		// that is read from the API server, never from a cache that may lag.
		return r.directSecret(ctx, obj)
	}
	secret := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: SecretName(obj)}, secret)
	if apierrors.IsNotFound(err) {
		if len(obj.Status.AcceptedSecrets) == 0 && len(obj.Status.Conditions) == 0 {
			return nil, nil
		}
		return r.directSecret(ctx, obj)
	}
	if err != nil {
		return nil, err
	}
	return secret, nil
}

// directSecret reads the client's Secret from the API server, bypassing the cache.
func (r *M2MClientReconciler) directSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: SecretName(obj)}, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return secret, nil
}

// boundIDs returns the client IDs that bindings give to obj's namespace and name, oldest first.
func (r *M2MClientReconciler) boundIDs(ctx context.Context, obj *m2mv1alpha1.M2MClient) ([]string, error) {
	var list m2mv1alpha1.ClientIDBindingList
	if err := r.List(ctx, &list, client.MatchingFields{BoundClientIndex: obj.Namespace + "/" + obj.Name}); err != nil {
		return nil, err
	}
	items := list.Items
	slices.SortFunc(items, func(a, b m2mv1alpha1.ClientIDBinding) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var ids []string
	for _, b := range items {
		if b.Name == m2mv1alpha1.ClientIDBindingName(b.Spec.ClientID) {
			ids = append(ids, b.Spec.ClientID)
		}
	}
	return ids, nil
}

// claim makes sure that id is bound to obj, creating the binding when the ID is free. It returns
// "" when the ID is obj's, else who holds it, in words that name no object of another namespace.
// An ID is free when no binding holds it and no other client's status holds it: an authenticated
// status, or before enforcement, a status written by a version without bindings, whose holders
// get their bindings on this version's first pass.
func (r *M2MClientReconciler) claim(ctx context.Context, obj *m2mv1alpha1.M2MClient, keys *statusmac.Set, id string) (string, error) {
	name := m2mv1alpha1.ClientIDBindingName(id)
	b := &m2mv1alpha1.ClientIDBinding{}
	err := r.Get(ctx, types.NamespacedName{Name: name}, b)
	if err == nil {
		return heldBy(obj, b, id), nil
	}
	if !apierrors.IsNotFound(err) {
		return "", err
	}
	var list m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &list, client.MatchingFields{ClientIDIndex: id}); err != nil {
		return "", err
	}
	for i := range list.Items {
		other := &list.Items[i]
		if other.UID == obj.UID || !other.DeletionTimestamp.IsZero() || other.Status.ClientID != id {
			continue
		}
		if !keys.Enforced() || keys.VerifyClientID(other) {
			if other.Namespace == obj.Namespace {
				return "M2MClient " + other.Name + " in this namespace", nil
			}
			return "another M2MClient", nil
		}
	}
	b = &m2mv1alpha1.ClientIDBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{m2mv1alpha1.ManagedByLabel: m2mv1alpha1.ManagedByValue}},
		Spec:       m2mv1alpha1.ClientIDBindingSpec{ClientID: id, Namespace: obj.Namespace, Name: obj.Name},
	}
	err = r.Create(ctx, b)
	if apierrors.IsAlreadyExists(err) {
		// Another client took it first, or the cache had not seen the binding yet.
		if err := r.APIReader.Get(ctx, types.NamespacedName{Name: name}, b); err != nil {
			return "", err
		}
		return heldBy(obj, b, id), nil
	}
	if err != nil {
		return "", err
	}
	return "", nil
}

// heldBy is "" when b gives id to obj, else who holds it, naming only objects of obj's namespace.
func heldBy(obj *m2mv1alpha1.M2MClient, b *m2mv1alpha1.ClientIDBinding, id string) string {
	switch {
	case b.Spec.ClientID != id:
		return "another client ID whose binding has the same name"
	case b.Binds(obj.Namespace, obj.Name):
		return ""
	case b.Spec.Namespace == obj.Namespace:
		return "M2MClient " + b.Spec.Name + " in this namespace (which may have been deleted)"
	}
	return "another M2MClient (which may have been deleted)"
}

// writeSecret creates the Secret, or updates it when it differs from what it should hold. It
// uses the Secret's resourceVersion, so that a concurrent edit makes it fail and retry rather than
// be overwritten.
func (r *M2MClientReconciler) writeSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient, existing *corev1.Secret, id, value string) (*corev1.Secret, error) {
	bundle, err := r.caBundle(ctx)
	if err != nil {
		return nil, err
	}
	desired := existing.DeepCopy()
	if desired == nil {
		desired = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: SecretName(obj), Namespace: obj.Namespace},
			Type:       corev1.SecretTypeOpaque,
		}
	}
	r.render(obj, desired, id, value, bundle)
	if existing == nil {
		if err := r.Create(ctx, desired); err != nil {
			return nil, err
		}
		return desired, nil
	}
	if equality.Semantic.DeepEqual(existing.Labels, desired.Labels) &&
		equality.Semantic.DeepEqual(existing.Annotations, desired.Annotations) &&
		equality.Semantic.DeepEqual(existing.OwnerReferences, desired.OwnerReferences) &&
		equality.Semantic.DeepEqual(existing.Data, desired.Data) {
		return existing, nil
	}
	if err := r.Update(ctx, desired); err != nil {
		return nil, err
	}
	return desired, nil
}

// render sets the fields of secret that the manager owns.
func (r *M2MClientReconciler) render(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, id, value string, bundle []byte) {
	tpl := obj.Spec.Secret
	previous := strings.Fields(strings.ReplaceAll(secret.Annotations[templateKeysAnnotation], ",", " "))
	labels := maps.Clone(secret.Labels)
	annotations := maps.Clone(secret.Annotations)
	if labels == nil {
		labels = map[string]string{}
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	for _, k := range previous {
		if kind, key, ok := strings.Cut(k, ":"); ok {
			if kind == "l" {
				delete(labels, key)
			} else {
				delete(annotations, key)
			}
		}
	}
	var keys []string
	for k, v := range tpl.Labels {
		labels[k] = v
		keys = append(keys, "l:"+k)
	}
	for k, v := range tpl.Annotations {
		annotations[k] = v
		keys = append(keys, "a:"+k)
	}
	labels[m2mv1alpha1.ManagedByLabel] = m2mv1alpha1.ManagedByValue
	labels[m2mv1alpha1.ClientLabel] = obj.Name
	slices.Sort(keys)
	if len(keys) > 0 {
		annotations[templateKeysAnnotation] = strings.Join(keys, ",")
	} else {
		delete(annotations, templateKeysAnnotation)
	}
	secret.Labels = labels
	if len(annotations) == 0 {
		annotations = nil
	}
	secret.Annotations = annotations

	// Point the controller reference at this object (its UID changes when restored from backup).
	refs := secret.OwnerReferences[:0:0]
	for _, ref := range secret.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			refs = append(refs, ref)
		}
	}
	secret.OwnerReferences = refs
	_ = controllerutil.SetControllerReference(obj, secret, r.Scheme())

	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[m2mv1alpha1.SecretKeyClientID] = []byte(id)
	// The credential under the key of its kind, and nothing under the other: a client that
	// changed kind leaves no stale secret or key for pods to send.
	for _, k := range credentials.DataKeys {
		delete(secret.Data, k)
	}
	if kind := credentials.KindOf(obj); kind != nil && value != "" {
		secret.Data[kind.DataKey()] = []byte(value)
	}
	secret.Data[m2mv1alpha1.SecretKeyTokenURL] = []byte(issuer.TokenURL(r.IssuerURL))
	secret.Data[m2mv1alpha1.SecretKeyIssuer] = []byte(r.IssuerURL)
	if bundle != nil {
		secret.Data[m2mv1alpha1.SecretKeyCA] = bundle
	}
}

// statusPatcher writes the status subresource with a merge patch against the last written copy,
// guarded by resourceVersion, so that a status computed from a stale read never lands.
type statusPatcher struct {
	client client.Client
	obj    *m2mv1alpha1.M2MClient
	base   *m2mv1alpha1.M2MClient
	// keys seal what the manager writes: everything left in status when it patches is what it
	// wrote or vouched for (Reconcile discards the rest first).
	keys *statusmac.Set
	// vouched is set once this reconcile has claimed the client ID (its binding is this
	// client's). Until then nothing is sealed: before enforcement, status.clientID may still be
	// whatever someone wrote, and sealing it would make it the manager's word.
	vouched bool
}

func (p *statusPatcher) patch(ctx context.Context) error {
	if p.vouched || p.obj.Status.ClientID == "" {
		if err := p.keys.Seal(p.obj); err != nil {
			return err
		}
	}
	if equality.Semantic.DeepEqual(p.base.Status, p.obj.Status) {
		return nil
	}
	if err := p.client.Status().Patch(ctx, p.obj, client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	p.base = p.obj.DeepCopy()
	return nil
}
