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
