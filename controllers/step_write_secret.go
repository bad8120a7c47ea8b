package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
)

// syncSecret makes the rest of the Secret match the spec, once it carries an accepted
// credential (or, for a client that takes none, none).
func (c *clientReconcile) syncSecret(ctx context.Context) (stepResult, error) {
	value := ""
	if c.kind != nil {
		value = string(c.secret.Data[c.kind.DataKey()])
	}
	if _, err := c.r.writeSecret(ctx, c.obj, c.secret, c.id, value, ""); err != nil {
		return proceed, c.r.secretWriteFailed(c.obj, err)
	}
	return proceed, nil
}

// secretName is the name of the client's credentials Secret.
func secretName(obj *m2mv1alpha1.M2MClient) string {
	if obj.Spec.Secret.Name != "" {
		return obj.Spec.Secret.Name
	}
	return obj.Name + "-credentials"
}

// writeSecret creates the Secret, or updates it when it differs from what it should hold. It
// uses the Secret's resourceVersion, so that a concurrent edit makes it fail and retry rather than
// be overwritten. next is the next credential of a rotation of spec.rotation.holder that is
// being started, or "" to keep the one the Secret carries while it is still the next (renderNext).
func (r *M2MClientReconciler) writeSecret(ctx context.Context, obj *m2mv1alpha1.M2MClient, existing *corev1.Secret, id, value, next string) (*corev1.Secret, error) {
	bundle, err := r.caBundle(ctx)
	if err != nil {
		return nil, err
	}
	desired := existing.DeepCopy()
	if desired == nil {
		desired = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secretName(obj), Namespace: obj.Namespace},
			Type:       corev1.SecretTypeOpaque,
		}
	}
	r.render(obj, desired, id, value, bundle)
	renderNext(obj, desired, value, next)
	if err := renderDerived(obj.Spec.Secret, desired); err != nil {
		return nil, err
	}
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

// render sets the fields of secret that the manager owns: its metadata and its data.
func (r *M2MClientReconciler) render(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, id, value string, bundle []byte) {
	renderMetadata(obj, secret)
	// Point the controller reference at this object (its UID changes when restored from backup),
	// or, for a Secret that outlives its client, at none. The marker goes in the same write as the
	// reference, so that every Secret the manager wrote has one or the other, whenever it stops.
	refs := secret.OwnerReferences[:0:0]
	for _, ref := range secret.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			refs = append(refs, ref)
		}
	}
	secret.OwnerReferences = refs
	if !orphaned(obj) {
		_ = controllerutil.SetControllerReference(obj, secret, r.Scheme())
	}
	r.renderData(obj, secret, id, value, bundle)
}

// orphaned reports whether obj's Secret outlives it (spec.secret.deletionPolicy Orphan).
func orphaned(obj *m2mv1alpha1.M2MClient) bool {
	return obj.Spec.Secret.DeletionPolicy == m2mv1alpha1.SecretDeletionPolicyOrphan
}

// renderMetadata sets the labels and annotations of spec.secret and the manager's own, and
// removes those that an earlier spec.secret set and this one does not.
func renderMetadata(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret) {
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
	if orphaned(obj) {
		annotations[m2mv1alpha1.OrphanAnnotation] = string(m2mv1alpha1.SecretDeletionPolicyOrphan)
	} else {
		delete(annotations, m2mv1alpha1.OrphanAnnotation)
	}
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

}

// renderData sets the client ID, the credential under the key of its kind, the issuer, the token
// URL and the CA bundle.
func (r *M2MClientReconciler) renderData(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, id, value string, bundle []byte) {
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
	// Dropped first so that an install that closes its public door leaves no stale URL.
	delete(secret.Data, m2mv1alpha1.SecretKeyPublicTokenURL)
	for k, v := range tokenServerLocation(r.IssuerURL, r.InClusterURL, bundle) {
		secret.Data[k] = []byte(v)
	}
}

// tokenServerLocation is where the token server is, under the keys of a credentials Secret: the
// issuer, the token URL and, when there is one, the CA bundle. With an in-cluster URL other than
// the issuer, token_url is the in-cluster one (pods reach the Service directly, with no hairpin
// through the public door) and public_token_url the issuer's. Credentials Secrets and the
// ConfigMap TokenServerConfigMap carry the same.
func tokenServerLocation(issuerURL, inClusterURL string, bundle []byte) map[string]string {
	loc := map[string]string{
		m2mv1alpha1.SecretKeyTokenURL: issuer.TokenURL(issuerURL),
		m2mv1alpha1.SecretKeyIssuer:   issuerURL,
	}
	if inClusterURL != "" && inClusterURL != issuerURL {
		loc[m2mv1alpha1.SecretKeyTokenURL] = issuer.TokenURL(inClusterURL)
		loc[m2mv1alpha1.SecretKeyPublicTokenURL] = issuer.TokenURL(issuerURL)
	}
	if bundle != nil {
		loc[m2mv1alpha1.SecretKeyCA] = string(bundle)
	}
	return loc
}

// caBundle is what credentials Secrets carry as ca.crt: the CA bundle when the manager issues
// the token server's certificate and the issuer is https, else nil (no ca.crt).
func (r *M2MClientReconciler) caBundle(ctx context.Context) ([]byte, error) {
	return caBundleOf(ctx, r.Client, r.APIReader, inClusterOr(r.InClusterURL, r.IssuerURL), r.CASecret, r.CABundleKey)
}

// inClusterOr is the URL pods reach the token server by: inClusterURL, or the issuer without one.
func inClusterOr(inClusterURL, issuerURL string) string {
	if inClusterURL != "" {
		return inClusterURL
	}
	return issuerURL
}

// caBundleOf is the bundle under key of the Secret caSecret (read from cache, else from api) for
// an https URL of the token server that pods reach (the CA signs the certificate served there; a
// public door serves a certificate of its own); nil for an http one or without a caSecret.
func caBundleOf(ctx context.Context, cache, api client.Reader, serverURL string, caSecret types.NamespacedName, key string) ([]byte, error) {
	if caSecret.Name == "" || !strings.HasPrefix(serverURL, "https://") {
		return nil, nil
	}
	// The cache holds the manager's labelled Secrets only; another issuer's Secret may lack the
	// label.
	s, err := readOwnSecret(ctx, cache, api, caSecret)
	if err != nil {
		return nil, err
	}
	if s == nil || len(s.Data[key]) == 0 {
		return nil, fmt.Errorf("%w: Secret %s has no %s yet (the manager writes its own CA at start; with --ca-bundle-secret, the issuer must put its CA there)", errNoCABundle, caSecret, key)
	}
	return s.Data[key], nil
}

// errNoCABundle says that the CA bundle is not there (yet); the reconcile is retried, so that no
// credentials Secret for an https issuer is written without the CA to trust it.
var errNoCABundle = errors.New("no CA bundle for the credentials Secrets")

// caBundleWait is how soon a wait for the CA bundle is looked at again, should the CA Secret's
// write not wake it.
const caBundleWait = 10 * time.Second
