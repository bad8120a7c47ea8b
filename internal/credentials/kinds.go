package credentials

import (
	"time"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// Form is how an accepted entry in status authenticates a client: the hash of a secret the client
// presents, or a public key that verifies the assertions the client signs. The form, not the
// kind, is what the token server checks: kinds that differ in where their credential comes from
// share a form.
type Form int

const (
	// FormSecret: the entry is the hash of a client secret (client_secret_basic and _post).
	FormSecret Form = iota + 1
	// FormKey: the entry holds a public key (private_key_jwt). Its hash is the key's thumbprint,
	// whose input is public, so it never accepts a secret.
	FormKey
)

// FormOf is the form of an accepted entry.
func FormOf(e *m2mv1alpha1.AcceptedSecret) Form {
	if e.PublicKey != nil {
		return FormKey
	}
	return FormSecret
}

// Kind is a kind of credential that the manager keeps in a client's Secret: everything about the
// credential that depends on what it is. The reconciler and its decisions hold a Kind and never
// ask which one it is, so that a new kind is one implementation of this interface.
type Kind interface {
	// Form is the form of this kind's entries in status.
	Form() Form
	// DataKey is the key of the Secret's data that holds the credential.
	DataKey() string
	// Issue makes a new credential, or for a credential that someone else supplies, returns the
	// one supplied.
	Issue() (string, error)
	// Source is what the source Secret holds for a credential that someone else supplies
	// (Sourced), or nil for a kind whose credentials the manager makes.
	Source() *Supply
	// Fingerprint is the Hash of the accepted entry of value, or "" for a value that is not a
	// credential of this kind at all.
	Fingerprint(value string) string
	// Entry is the accepted entry of value, created at now.
	Entry(value string, now time.Time) (m2mv1alpha1.AcceptedSecret, error)
	// Problem says why a value someone wrote into the Secret is refused, or returns "" for one
	// the manager accepts.
	Problem(value string) string
	// Outdated says why an accepted entry of this kind no longer fits the spec, so that the
	// credential rotates, or returns "" when it fits.
	Outdated(e *m2mv1alpha1.AcceptedSecret) string
}

// KindOf is the kind of credential obj's Secret carries: a generated key pair when
// spec.authentication.keyPair is set, a client secret while the client takes one, and nil when
// the Secret carries no credential (the client authenticates as a ServiceAccount, a federated
// workload or with keys it holds itself).
func KindOf(obj *m2mv1alpha1.M2MClient) Kind {
	if alg := m2mv1alpha1.KeyPairAuthentication(obj); alg != "" {
		return KeyPair{Algorithm: alg}
	}
	if m2mv1alpha1.SecretAuthentication(obj) {
		return ClientSecret{}
	}
	return nil
}

// DataKeys are the keys of a Secret's data that any kind keeps its credential under; a Secret
// carries at most the one of its client's kind, so that a client that changed kind leaves no
// stale credential for pods to send.
var DataKeys = []string{m2mv1alpha1.SecretKeyClientSecret, m2mv1alpha1.SecretKeyPrivateKey}

// AcceptsCurrent reports whether obj accepts its current (unexpiring) credential of form f: while
// its kind has that form, or while it switches from a kind of that form to another and the
// manager has not yet handled the change (status.observedGeneration behind metadata.generation;
// only the manager writes status). Once it has, the old kind's credential has its grace period,
// and a client that turned it off with nothing instead accepts it only through that.
func AcceptsCurrent(obj *m2mv1alpha1.M2MClient, f Form) bool {
	k := KindOf(obj)
	if k == nil {
		return false
	}
	return k.Form() == f || obj.Status.ObservedGeneration < obj.Generation
}

// JWK is k, a public key of the API (spec.authentication.publicKeys or an accepted entry), as
// the jwk package's key, which turns it into a crypto key.
func JWK(k *m2mv1alpha1.ClientPublicKey) jwk.Key {
	return jwk.Key{KeyID: k.KeyID, KeyType: k.KeyType, Algorithm: k.Algorithm, Curve: k.Curve, X: k.X, Y: k.Y, N: k.N, E: k.E}
}
