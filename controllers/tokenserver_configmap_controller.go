package controllers

import (
	"context"
	"errors"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// TokenServerConfigMapReconciler publishes where the token server is in a ConfigMap that only
// administrators and the manager may write and everyone may read
// (m2mv1alpha1.TokenServerConfigMap), for the people who must not trust a credentials Secret
// for it: kubectl m2m why sends the caller's Kubernetes token there, and verify trusts the
// issuer it names. The ConfigMap is derived from the flags and the CA bundle alone, so every
// reconcile writes it whole, and a crash between writes loses nothing.
type TokenServerConfigMapReconciler struct {
	client.Client
	// APIReader reads the ConfigMap when the label-filtered cache does not hold it (someone
	// created it, or removed its label), and the CA Secret when the cache lacks it.
	APIReader client.Reader
	// ConfigMap is the namespace and name of the ConfigMap.
	ConfigMap types.NamespacedName
	// IssuerURL, InClusterURL, CASecret and CABundleKey are the M2MClientReconciler's: the
	// ConfigMap says what every credentials Secret says.
	IssuerURL, InClusterURL string
	CASecret                types.NamespacedName
	CABundleKey             string
}

// The manager's rights on ConfigMaps are a Role in its own namespace
// (config/rbac/token_server_configmap.yaml), not a marker of the cluster-wide ClusterRole: it
// writes no ConfigMap anywhere else.

// SetupWithManager registers the controller. It reconciles once at start, when the ConfigMap
// changes or goes, and when the CA bundle changes.
func (r *TokenServerConfigMapReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := reconcile.Request{NamespacedName: r.ConfigMap}
	atStart, toReq := singleton(req)
	isConfigMap := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return client.ObjectKeyFromObject(o) == r.ConfigMap
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("tokenserverconfigmap").
		WatchesRawSource(atStart).
		Watches(&corev1.ConfigMap{}, toReq, builder.WithPredicates(isConfigMap)).
		Watches(&corev1.Secret{}, toReq, builder.WithPredicates(caBundleEvents(r.CASecret, r.CABundleKey)...)).
		Complete(r)
}

// Reconcile makes the ConfigMap hold the issuer, the token URL and the CA bundle that
// credentials Secrets get, and nothing else. Until the CA bundle exists it holds the issuer and
// the token URL alone (they come from the manager's flags): a ConfigMap that someone else wrote
// there before the manager's first write must not stand meanwhile, since kubectl m2m why sends
// the caller's Kubernetes token where it says. Without the CA, callers cannot verify the token
// server yet and send nothing.
func (r *TokenServerConfigMapReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	bundle, err := caBundleOf(ctx, r.Client, r.APIReader, inClusterOr(r.InClusterURL, r.IssuerURL), r.CASecret, r.CABundleKey)
	waiting := errors.Is(err, errNoCABundle)
	if err != nil && !waiting {
		return ctrl.Result{}, err
	}
	res := ctrl.Result{}
	if waiting {
		// At start, before the CA is made, or while cert-manager has not issued yet: the CA
		// Secret's write wakes this (caBundleEvents); the requeue is a backstop.
		log.FromContext(ctx).Info("waiting for the CA bundle to publish it with the token server's location", "reason", err.Error())
		res.RequeueAfter = caBundleWait
	}
	cm, err := r.read(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	data := tokenServerLocation(r.IssuerURL, r.InClusterURL, bundle)
	labels := componentLabels(cm.Labels, m2mv1alpha1.TokenServerLocationComponent)
	if cm.ResourceVersion != "" && maps.Equal(cm.Data, data) && len(cm.BinaryData) == 0 && maps.Equal(cm.Labels, labels) {
		return res, nil
	}
	cm.Data, cm.BinaryData, cm.Labels = data, nil, labels
	if cm.ResourceVersion == "" {
		err = r.Create(ctx, cm)
	} else {
		// Guarded by the resourceVersion read: an edit in between makes it fail and decide again.
		err = r.Update(ctx, cm)
	}
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	if err == nil {
		log.FromContext(ctx).Info("published the token server's location", "configMap", r.ConfigMap.String(), "issuer", r.IssuerURL, "caBundle", bundle != nil)
	}
	return res, err
}

// read returns a copy of the ConfigMap to change, from the cache or else the API server, or an
// empty one of its name when there is none.
func (r *TokenServerConfigMapReconciler) read(ctx context.Context) (*corev1.ConfigMap, error) {
	for _, reader := range []client.Reader{r.Client, r.APIReader} {
		cm := &corev1.ConfigMap{}
		err := reader.Get(ctx, r.ConfigMap, cm)
		if err == nil {
			return cm, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.ConfigMap.Namespace, Name: r.ConfigMap.Name}}, nil
}
