package controllers

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// IDSource says where ResolveClientID found a client ID.
type IDSource string

const (
	// IDFromSpec: spec.clientID, an imported ID.
	IDFromSpec IDSource = "Spec"
	// IDFromStatus: status.clientID, which the manager authenticated (or, before enforcement, a
	// status written by a version without MACs).
	IDFromStatus IDSource = "Status"
	// IDFromBinding: status was lost; a ClientIDBinding gives the ID to this namespace and name.
	IDFromBinding IDSource = "Binding"
	// IDNew: nothing names an ID; a new one is generated.
	IDNew IDSource = "New"
)

// ResolveClientID returns the client ID that obj should have and where it comes from: spec.clientID,
// else status.clientID, else, when status was lost, an ID that a ClientIDBinding already gives
// to obj's namespace and name (bound, oldest first): the one the client's own Secret names if it
// is one of them, else the newest. Only bindings are trusted here: a tenant can write its own
// Secret, so an ID found only there could be another namespace's. "" and IDNew mean a new ID.
func ResolveClientID(obj *m2mv1alpha1.M2MClient, secret *corev1.Secret, bound []string) (string, IDSource) {
	switch {
	case obj.Spec.ClientID != "":
		return obj.Spec.ClientID, IDFromSpec
	case obj.Status.ClientID != "":
		return obj.Status.ClientID, IDFromStatus
	case len(bound) > 0:
		if secret != nil {
			id := string(secret.Data[m2mv1alpha1.SecretKeyClientID])
			if owner, _ := OwnedBy(secret, obj, id); owner.MayWrite() && slices.Contains(bound, id) {
				return id, IDFromBinding
			}
		}
		return bound[len(bound)-1], IDFromBinding
	}
	return "", IDNew
}
