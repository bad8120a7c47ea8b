package controllers

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// SecretOwnership says whether the manager may write a Secret as a client's credentials Secret.
type SecretOwnership string

const (
	// SecretOwned: the Secret's controller reference names the client.
	SecretOwned SecretOwnership = "Owned"
	// SecretOrphaned: the Secret has no controller and is an orphan of the client's namespace and
	// name (spec.secret.deletionPolicy Orphan): it carries the manager's labels naming the client,
	// the orphan marker, and the client ID bound to that namespace and name.
	SecretOrphaned SecretOwnership = "Orphaned"
	// SecretForeign: the Secret is someone else's; the manager never writes it.
	SecretForeign SecretOwnership = "Foreign"
)

// MayWrite reports whether the manager may write a Secret of this ownership.
func (o SecretOwnership) MayWrite() bool { return o != SecretForeign }

// OwnedBy says whether secret is obj's credentials Secret, and when it is not, why, in a phrase
// that names no other namespace's object. id is the client ID that obj holds the binding of ("" when
// it holds none yet).
//
// A controller reference is matched by kind and name, not UID, so that a client restored from a
// backup (with a new UID) finds its Secret again. A Secret without one is taken only as an
// orphan, anchored to the ClientIDBinding: its client_id must be the ID bound to obj's namespace
// and name. A tenant who can write Secrets in its namespace can forge every other mark of an
// orphan, and that is acceptable: the ID it could attach a secret of its choosing to is one that
// its own namespace holds, which it can already do by writing the Secret of a live client
// (ActionAdopt). It cannot attach one to an ID bound to another namespace, nor to an ID released
// by an administrator (a released ID's orphan is not taken back under a new ID).
func OwnedBy(secret *corev1.Secret, obj *m2mv1alpha1.M2MClient, id string) (SecretOwnership, string) {
	if ref := metav1.GetControllerOf(secret); ref != nil {
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err == nil && gv.Group == m2mv1alpha1.GroupVersion.Group && ref.Kind == "M2MClient" && ref.Name == obj.Name {
			return SecretOwned, ""
		}
		return SecretForeign, "it is controlled by another object"
	}
	switch {
	case secret.Labels[m2mv1alpha1.ManagedByLabel] != m2mv1alpha1.ManagedByValue:
		return SecretForeign, "the manager did not write it"
	case secret.Labels[m2mv1alpha1.ClientLabel] != obj.Name:
		return SecretForeign, "its " + m2mv1alpha1.ClientLabel + " label names another M2MClient"
	case secret.Annotations[m2mv1alpha1.OrphanAnnotation] != string(m2mv1alpha1.SecretDeletionPolicyOrphan):
		return SecretForeign, "it has no owner reference and was not orphaned by the manager (no " + m2mv1alpha1.OrphanAnnotation + ": Orphan)"
	case id == "" || string(secret.Data[m2mv1alpha1.SecretKeyClientID]) != id:
		return SecretForeign, "it is an orphaned Secret of a client with another client ID than the one bound to this namespace and name"
	}
	return SecretOrphaned, ""
}
