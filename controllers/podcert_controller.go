package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/podclientca"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests/status,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,resourceNames=m2m.dev/pod-client,verbs=sign
// +kubebuilder:rbac:groups="",resources=pods,verbs=get

// The ConfigMap of the CA is written under the manager's Role in its own namespace
// (config/rbac/token_server_configmap.yaml), like the token server's location.

// PodClientCA keeps the CA of the signer m2m.dev/pod-client: its key in a Secret only the
// manager reads, its certificate in a ConfigMap the token server mounts. Both live in the
// manager's namespace.
type PodClientCA struct {
	client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	Secret    types.NamespacedName
	ConfigMap types.NamespacedName
	// mu makes Ready one at a time: two workers publishing CAs read at different moments (one
	// before a replaced Secret, one after) would flip the ConfigMap back and sign with the CA it
	// no longer holds.
	mu sync.Mutex
}

// errCADamaged is a CA Secret that exists and does not parse: never overwritten, since the
// token server may trust it and it may be the only copy.
var errCADamaged = errors.New("the pod client CA Secret is damaged; it is left as it is")

// Ready returns the CA once its certificate is in the ConfigMap, making the CA and publishing it
// first when they are missing. The order makes a crash safe: a CA is stored before it is
// published, and published before it signs, so that the token server never meets a certificate
// of a CA it was not given.
func (ca *PodClientCA) Ready(ctx context.Context) (*servingcert.KeyPair, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	// Past the cache: a cache that has not seen the Secret replaced would have the manager
	// publish and sign with the CA an administrator just retired.
	s, err := getSecretOrNil(ctx, ca.APIReader, ca.Secret)
	if err != nil {
		return nil, err
	}
	if s == nil {
		kp, err := podclientca.NewCA(ca.Clock.Now())
		if err != nil {
			return nil, err
		}
		s = editOwnSecret(nil, ca.Secret, corev1.SecretTypeOpaque)
		s.Labels = componentLabels(nil, podclientca.Component)
		s.Data[podclientca.CertKey], s.Data[podclientca.KeyKey] = kp.CertPEM, kp.KeyPEM
		// Create fails when another worker made one meanwhile: this one is then dropped unused.
		if err := ca.Create(ctx, s); err != nil {
			return nil, err
		}
		log.FromContext(ctx).Info("made the pod client CA", "secret", ca.Secret.String(), "notAfter", kp.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	kp, err := servingcert.Parse(s.Data[podclientca.CertKey], s.Data[podclientca.KeyKey])
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", errCADamaged, ca.Secret, err)
	}
	if err := ca.publish(ctx, kp); err != nil {
		return nil, err
	}
	return kp, nil
}

// publish makes the ConfigMap hold the CA certificate, and nothing else.
func (ca *PodClientCA) publish(ctx context.Context, kp *servingcert.KeyPair) error {
	cm := &corev1.ConfigMap{}
	err := ca.Get(ctx, ca.ConfigMap, cm)
	if apierrors.IsNotFound(err) {
		// The cache holds only labelled ConfigMaps: one without the label is the API server's.
		err = ca.APIReader.Get(ctx, ca.ConfigMap, cm)
	}
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ca.ConfigMap.Namespace, Name: ca.ConfigMap.Name}}
	} else if err != nil {
		return err
	}
	data := map[string]string{podclientca.CertKey: string(kp.CertPEM)}
	labels := componentLabels(cm.Labels, podclientca.Component)
	if cm.ResourceVersion != "" && maps.Equal(cm.Data, data) && len(cm.BinaryData) == 0 && maps.Equal(cm.Labels, labels) {
		return nil
	}
	cm = cm.DeepCopy()
	cm.Data, cm.BinaryData, cm.Labels = data, nil, labels
	if cm.ResourceVersion == "" {
		err = ca.Create(ctx, cm)
	} else {
		err = ca.Update(ctx, cm)
	}
	if err == nil {
		log.FromContext(ctx).Info("published the pod client CA", "configMap", ca.ConfigMap.String())
	}
	return err
}

// PodClientCAReconciler publishes the pod client CA at start and whenever its Secret or
// ConfigMap changes, so that the token server can mount the ConfigMap before any pod asks for a
// certificate, and an edited ConfigMap is put back.
type PodClientCAReconciler struct {
	CA *PodClientCA
}

// SetupWithManager reconciles at start and on every event of the Secret or the ConfigMap.
func (r *PodClientCAReconciler) SetupWithManager(mgr ctrl.Manager) error {
	atStart, toReq := singleton(reconcile.Request{NamespacedName: r.CA.ConfigMap})
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		key := client.ObjectKeyFromObject(o)
		return key == r.CA.Secret || key == r.CA.ConfigMap
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("podclientca").
		WatchesRawSource(atStart).
		Watches(&corev1.Secret{}, toReq, builder.WithPredicates(ours)).
		Watches(&corev1.ConfigMap{}, toReq, builder.WithPredicates(ours)).
		Complete(r)
}

// Reconcile makes and publishes the CA.
func (r *PodClientCAReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	return caResult(ctx, podCAReady(ctx, r.CA))
}

// podCAReady is ca.Ready's error alone.
func podCAReady(ctx context.Context, ca *PodClientCA) error {
	_, err := ca.Ready(ctx)
	return err
}

// caResult turns an error of PodClientCA.Ready into a result: a conflict or a lost race to
// create is decided again at once, a damaged CA is logged and looked at again later.
func caResult(ctx context.Context, err error) (ctrl.Result, error) {
	switch {
	case err == nil:
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	case errors.Is(err, errCADamaged):
		log.FromContext(ctx).Error(err, "no pod certificate is issued until it is repaired or deleted")
		return ctrl.Result{RequeueAfter: damagedKeysRecheck}, nil
	}
	return ctrl.Result{}, err
}

// PodCertificateReconciler is the signer m2m.dev/pod-client: it decides each
// PodCertificateRequest of that signer with decidePodCertificate and writes the verdict into its
// status (an Issued certificate, or Denied or Failed with a reason), once: the API server makes
// a decided status immutable. Requests of other signers are never read from the cache, let alone
// written.
type PodCertificateReconciler struct {
	client.Client
	// APIReader reads the pod, past the cache. The M2MClients come from the manager's trimmed
	// cache by an index of the ServiceAccounts they name: listing a namespace's clients past the
	// cache for every request would let a tenant with large clients and many pods run the
	// manager out of memory. A decision is final, so a young request that finds no client is
	// asked again before it is denied, in case the cache has not seen a new client yet.
	APIReader client.Reader
	Clock     clock.PassiveClock
	CA        *PodClientCA
}

// SetupWithManager watches the signer's PodCertificateRequests.
func (r *PodCertificateReconciler) SetupWithManager(mgr ctrl.Manager, o controller.Options) error {
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		req, ok := o.(*certificatesv1.PodCertificateRequest)
		return ok && req.Spec.SignerName == m2mv1alpha1.PodClientSignerName && !podCertDecided(req)
	})
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &m2mv1alpha1.M2MClient{}, podCertificateSAIndex, indexPodCertificateSAs); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("podcertificate").
		For(&certificatesv1.PodCertificateRequest{}, builder.WithPredicates(ours)).
		WithOptions(o).
		Complete(r)
}

// Reconcile decides one request.
func (r *PodCertificateReconciler) Reconcile(ctx context.Context, key ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	req := &certificatesv1.PodCertificateRequest{}
	if err := r.Get(ctx, key.NamespacedName, req); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if req.Spec.SignerName != m2mv1alpha1.PodClientSignerName || podCertDecided(req) {
		return ctrl.Result{}, nil
	}
	ca, err := r.CA.Ready(ctx)
	if err != nil {
		return caResult(ctx, err)
	}
	in := podCertInput{Request: req, Now: r.Clock.Now(), CANotAfter: ca.Cert.NotAfter}
	pod := &corev1.Pod{}
	switch err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: req.Namespace, Name: req.Spec.PodName}, pod); {
	case err == nil:
		in.Pod = pod
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, err
	}
	var clients m2mv1alpha1.M2MClientList
	if err := r.List(ctx, &clients, client.InNamespace(req.Namespace), client.MatchingFields{podCertificateSAIndex: req.Spec.ServiceAccountName}); err != nil {
		return ctrl.Result{}, err
	}
	in.Clients = clients.Items
	d := decidePodCertificate(in)
	if d.Action == podCertDeny && d.Reason == PodCertReasonServiceAccountNotNamed && in.Now.Sub(req.CreationTimestamp.Time) < podCertCacheGrace {
		return ctrl.Result{RequeueAfter: podCertCacheGrace / 4}, nil
	}
	out := req.DeepCopy()
	now := metav1.NewTime(in.Now)
	cond := metav1.Condition{Status: metav1.ConditionTrue, Reason: d.Reason, Message: d.Message, LastTransitionTime: now, ObservedGeneration: req.Generation}
	switch d.Action {
	case podCertIgnore:
		return ctrl.Result{}, nil
	case podCertDeny:
		cond.Type = certificatesv1.PodCertificateRequestConditionTypeDenied
	case podCertFail:
		cond.Type = certificatesv1.PodCertificateRequestConditionTypeFailed
	case podCertIssue:
		pub, err := podclientca.PublicKeyOf(req.Spec.StubPKCS10Request)
		if err != nil {
			cond.Type, cond.Reason, cond.Message = certificatesv1.PodCertificateRequestConditionTypeDenied, certificatesv1.PodCertificateRequestConditionUnsupportedKeyType, err.Error()
			break
		}
		chain, _, err := podclientca.Issue(ca, podclientca.Leaf{
			PublicKey: pub, Namespace: req.Namespace, ServiceAccount: req.Spec.ServiceAccountName, Pod: req.Spec.PodName,
			NotBefore: d.NotBefore, NotAfter: d.NotAfter,
		})
		if err != nil {
			return ctrl.Result{}, err
		}
		cond.Type = certificatesv1.PodCertificateRequestConditionTypeIssued
		out.Status.CertificateChain = string(bytes.TrimSpace(chain)) + "\n"
		out.Status.NotBefore, out.Status.NotAfter = &metav1.Time{Time: d.NotBefore}, &metav1.Time{Time: d.NotAfter}
		out.Status.BeginRefreshAt = &metav1.Time{Time: d.BeginRefreshAt}
	}
	out.Status.Conditions = append(out.Status.Conditions, cond)
	if err := r.Status().Update(ctx, out); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	logger.Info("decided a pod certificate request", "decision", cond.Type, "reason", cond.Reason, "message", cond.Message,
		"pod", req.Spec.PodName, "serviceAccount", req.Spec.ServiceAccountName)
	return ctrl.Result{}, nil
}

// podCertificateSAIndex indexes M2MClients by the ServiceAccounts their podCertificates name.
const podCertificateSAIndex = "spec.authentication.podCertificates.serviceAccounts"

// podCertCacheGrace is how long a request that finds no client naming its ServiceAccount waits
// for the cache before it is denied for good.
const podCertCacheGrace = 20 * time.Second

func indexPodCertificateSAs(o client.Object) []string {
	c, ok := o.(*m2mv1alpha1.M2MClient)
	if !ok || c.Spec.Authentication.PodCertificates == nil {
		return nil
	}
	return c.Spec.Authentication.PodCertificates.ServiceAccounts
}
