package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ClientIDBindingSpec says which M2MClient, by namespace and name, a client ID belongs to.
type ClientIDBindingSpec struct {
	// ClientID is the bound client ID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._~-]+$`
	ClientID string `json:"clientID"`

	// Namespace is the namespace of the M2MClient that holds the ID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// Name is the name of the M2MClient that holds the ID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ClientIDBindingStatus records what outlives the M2MClient of the ID: the revocation of its
// tokens when the client is disabled or deleted. Only the manager writes it (administrators may
// too); the token server reads it and publishes tokensRevokedBefore in its revocation list.
type ClientIDBindingStatus struct {
	// TokensRevokedBefore revokes the tokens of this client ID issued before it: the manager
	// raises it to the second after it sees the client disabled or deleted, to the creation of a
	// client of another UID under the same namespace and name, and to the client's
	// spec.revokeTokensIssuedBefore up to the second after now. It never goes back,
	// so tokens issued before a disable stay refused after the client is enabled again, and
	// tokens of a deleted client stay refused after token-server restarts and when the client
	// is created again.
	// +optional
	TokensRevokedBefore *metav1.Time `json:"tokensRevokedBefore,omitempty"`

	// DisabledSince is when the manager saw the client disabled; it is cleared when the client
	// is enabled, so that the next disable raises tokensRevokedBefore again.
	// +optional
	DisabledSince *metav1.Time `json:"disabledSince,omitempty"`

	// DeletedAt is when the manager saw that the client of the binding no longer exists; it is
	// cleared when the client is created again.
	// +optional
	DeletedAt *metav1.Time `json:"deletedAt,omitempty"`

	// ClientUID is the UID of the M2MClient the manager last saw with this ID. A client of the
	// same namespace and name with another UID was deleted and created again, perhaps between
	// two of the manager's looks: the tokens issued before the new one's creation are revoked.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ClientUID string `json:"clientUID,omitempty"`
}

// ClientIDBinding gives a client ID to one namespace and name for good: the manager creates it
// when an M2MClient first takes the ID, and never deletes it, so that the ID outlives the
// M2MClient (a GitOps replace, a restore) and no other namespace can take it over. Deleting the
// binding is how an administrator releases the ID; only administrators may write bindings.
// Its name is the client ID, or "sha256-" and the hex SHA-256 of the ID when the ID is not a
// valid object name (ClientIDBindingName).
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=m2mbinding
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Client ID",type=string,JSONPath=`.spec.clientID`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.name`
// +kubebuilder:printcolumn:name="Tokens Revoked Before",type=date,JSONPath=`.status.tokensRevokedBefore`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:selectablefield:JSONPath=`.spec.clientID`
// +kubebuilder:selectablefield:JSONPath=`.spec.namespace`
// +kubebuilder:validation:XValidation:rule="self.spec == oldSelf.spec",message="a binding cannot be changed; delete it to release the client ID"
// The rule on status.tokensRevokedBefore is on the root, not on status: a rule on status does not
// run when an update removes status whole ({"status":null}).
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.tokensRevokedBefore) || (has(self.status) && has(self.status.tokensRevokedBefore) && self.status.tokensRevokedBefore >= oldSelf.status.tokensRevokedBefore)",message="status.tokensRevokedBefore cannot be removed or moved back; delete the binding to release the client ID"
type ClientIDBinding struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the binding.
	// +required
	Spec ClientIDBindingSpec `json:"spec"`

	// status records the revocation of the ID's tokens.
	// +optional
	Status ClientIDBindingStatus `json:"status,omitempty"`
}

// ClientIDBindingList is a list of ClientIDBindings.
// +kubebuilder:object:root=true
type ClientIDBindingList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the ClientIDBindings.
	Items []ClientIDBinding `json:"items"`
}

// hashedBindingPrefix starts the name of a binding whose client ID is not a valid object name.
// IDs that start with it are always hashed, so that no ID can take another's name.
const hashedBindingPrefix = "sha256-"

// ClientIDBindingName is the name of the ClientIDBinding of id: the ID itself when it is a valid
// object name, so that "kubectl get clientidbinding <id>" finds it, else "sha256-" and the hex
// SHA-256 of the ID.
func ClientIDBindingName(id string) string {
	if !strings.HasPrefix(id, hashedBindingPrefix) && len(validation.IsDNS1123Subdomain(id)) == 0 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hashedBindingPrefix + hex.EncodeToString(sum[:])
}

// ValidClientID reports whether id has the form spec.clientID, status.clientID and a binding's
// spec.clientID require: 1 to 128 characters of A-Z, a-z, 0-9 and "._~-".
func ValidClientID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// Binds reports whether b gives its client ID to the M2MClient namespace/name.
func (b *ClientIDBinding) Binds(namespace, name string) bool {
	return b.Spec.Namespace == namespace && b.Spec.Name == name
}

func init() {
	SchemeBuilder.Register(&ClientIDBinding{}, &ClientIDBindingList{})
}
