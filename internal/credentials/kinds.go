package credentials

import (
	"crypto/rsa"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// MaxAdoptedRSABits bounds the RSA keys that someone writes into a Secret.
const MaxAdoptedRSABits = 4096

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
	// Issue makes a new credential.
	Issue() (string, error)
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

// ClientSecret is a 256-bit secret that the client presents, kept in the Secret as client_secret
// and in status as its hash and last four characters.
type ClientSecret struct{}

// Form implements Kind.
func (ClientSecret) Form() Form { return FormSecret }

// DataKey implements Kind.
func (ClientSecret) DataKey() string { return m2mv1alpha1.SecretKeyClientSecret }

// Issue implements Kind.
func (ClientSecret) Issue() (string, error) { return NewSecret() }

// Fingerprint implements Kind.
func (ClientSecret) Fingerprint(value string) string { return Hash(value) }

// Entry implements Kind.
func (ClientSecret) Entry(value string, now time.Time) (m2mv1alpha1.AcceptedSecret, error) {
	return m2mv1alpha1.AcceptedSecret{CreatedAt: metav1.NewTime(now), Hash: Hash(value), LastFour: LastFour(value)}, nil
}

// Problem implements Kind: a secret must pass StrengthProblem.
func (ClientSecret) Problem(value string) string { return StrengthProblem(value) }

// Outdated implements Kind: any accepted secret fits.
func (ClientSecret) Outdated(*m2mv1alpha1.AcceptedSecret) string { return "" }

// KeyPair is a key pair that the manager generates: the private key in the Secret as PKCS #8
// PEM under private_key, the public key in status, where the token server verifies assertions
// with it.
type KeyPair struct {
	// Algorithm is the algorithm of the keys (spec.authentication.keyPair.algorithm).
	Algorithm m2mv1alpha1.KeyAlgorithm
}

// Form implements Kind.
func (KeyPair) Form() Form { return FormKey }

// DataKey implements Kind.
func (KeyPair) DataKey() string { return m2mv1alpha1.SecretKeyPrivateKey }

// Issue implements Kind: a new key pair of the algorithm, as PKCS #8 PEM.
func (k KeyPair) Issue() (string, error) {
	signer, err := signingkeys.NewSigner(signingkeys.Algorithm(k.Algorithm))
	if err != nil {
		return "", err
	}
	pemKey, err := jwk.MarshalPrivateKeyPEM(signer)
	return string(pemKey), err
}

// Fingerprint implements Kind: "sha256:" and the RFC 7638 thumbprint of the public key (the
// kid), or "" for a private key that does not parse.
func (KeyPair) Fingerprint(value string) string {
	_, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	if err != nil {
		return ""
	}
	return HashPrefix + pub.KeyID
}

// Entry implements Kind: the fingerprint and the public key.
func (KeyPair) Entry(value string, now time.Time) (m2mv1alpha1.AcceptedSecret, error) {
	e := m2mv1alpha1.AcceptedSecret{CreatedAt: metav1.NewTime(now)}
	_, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	if err != nil {
		return e, err
	}
	e.Hash = HashPrefix + pub.KeyID
	e.PublicKey = &m2mv1alpha1.ClientPublicKey{KeyID: pub.KeyID, KeyType: pub.KeyType, Algorithm: pub.Algorithm,
		Curve: pub.Curve, X: pub.X, Y: pub.Y, N: pub.N, E: pub.E}
	return e, nil
}

// Problem implements Kind: a private key must be a PKCS #8 PEM key of the algorithm.
func (k KeyPair) Problem(value string) string {
	signer, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	switch {
	case err != nil:
		return fmt.Sprintf("not a usable private key (%v)", err)
	case pub.Algorithm != string(k.Algorithm) || !signingkeys.Matches(signingkeys.Algorithm(k.Algorithm), signer):
		return fmt.Sprintf("a %s key, not the %s key that spec.authentication.keyPair asks for", pub.Algorithm, k.Algorithm)
	}
	if rsaKey, ok := signer.Public().(*rsa.PublicKey); ok && rsaKey.N.BitLen() > MaxAdoptedRSABits {
		// Every reconcile parses it and every assertion verifies with it.
		return fmt.Sprintf("an RSA key of %d bits; at most %d are accepted", rsaKey.N.BitLen(), MaxAdoptedRSABits)
	}
	return ""
}

// Outdated implements Kind: a key of another algorithm than the spec asks for rotates.
func (k KeyPair) Outdated(e *m2mv1alpha1.AcceptedSecret) string {
	if e.PublicKey == nil || e.PublicKey.Algorithm == string(k.Algorithm) {
		return ""
	}
	return fmt.Sprintf("spec.authentication.keyPair.algorithm changed from %s to %s", e.PublicKey.Algorithm, k.Algorithm)
}

// JWK is k, a public key of the API (spec.authentication.publicKeys or an accepted entry), as
// the jwk package's key, which turns it into a crypto key.
func JWK(k *m2mv1alpha1.ClientPublicKey) jwk.Key {
	return jwk.Key{KeyID: k.KeyID, KeyType: k.KeyType, Algorithm: k.Algorithm, Curve: k.Curve, X: k.X, Y: k.Y, N: k.N, E: k.E}
}
