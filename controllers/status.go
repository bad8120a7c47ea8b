package controllers

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

// loadedStatusKeys are the status keys parsed from one version of the signing-key Secret.
type loadedStatusKeys struct {
	resourceVersion string
	set             *statusmac.Set
}

// errNoStatusKeys says that the status keys are not loaded yet; the reconcile is retried.
var errNoStatusKeys = errors.New("the status keys are not in the signing-key Secret yet")

// statusKeysWait is how soon a client waiting for the status keys is looked at again, should the
// signing-key Secret's write not wake it.
const statusKeysWait = 5 * time.Second

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

// setReady sets the Ready condition of obj.
func setReady(obj *m2mv1alpha1.M2MClient, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{
		Type:               m2mv1alpha1.ConditionReady,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: obj.Generation,
	})
}

// setHealth writes h into obj's conditions for its current generation, removing the kstatus
// conditions that h leaves out.
func setHealth(obj *m2mv1alpha1.M2MClient, h Health) {
	for typ, c := range map[string]*metav1.Condition{
		m2mv1alpha1.ConditionReconciling: h.Reconciling,
		m2mv1alpha1.ConditionStalled:     h.Stalled,
	} {
		if c == nil {
			meta.RemoveStatusCondition(&obj.Status.Conditions, typ)
			continue
		}
		c.ObservedGeneration = obj.Generation
		meta.SetStatusCondition(&obj.Status.Conditions, *c)
	}
}
