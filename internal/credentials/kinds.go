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

// The credential a client's Secret carries is a client secret, or the private key of a key pair.
// Functions here take the key algorithm of the client (m2mv1alpha1.KeyPairAuthentication): ""
// means a client secret.

// MaxAdoptedRSABits bounds the RSA keys that someone writes into a Secret.
const MaxAdoptedRSABits = 4096

// DataKey is the key of the Secret's data that holds the credential.
func DataKey(alg m2mv1alpha1.KeyAlgorithm) string {
	if alg == "" {
		return m2mv1alpha1.SecretKeyClientSecret
	}
	return m2mv1alpha1.SecretKeyPrivateKey
}

// Issue makes a new credential: a 256-bit secret, or a key pair of alg as PKCS #8 PEM.
func Issue(alg m2mv1alpha1.KeyAlgorithm) (string, error) {
	if alg == "" {
		return NewSecret()
	}
	signer, err := signingkeys.NewSigner(signingkeys.Algorithm(alg))
	if err != nil {
		return "", err
	}
	pemKey, err := jwk.MarshalPrivateKeyPEM(signer)
	return string(pemKey), err
}

// Fingerprint is the Hash of the accepted entry of value: Hash(value) for a secret, and for a
// private key "sha256:" and the RFC 7638 thumbprint of its public key (the kid). It is "" for a
// private key that does not parse.
func Fingerprint(alg m2mv1alpha1.KeyAlgorithm, value string) string {
	if alg == "" {
		return Hash(value)
	}
	_, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	if err != nil {
		return ""
	}
	return HashPrefix + pub.KeyID
}

// Entry is the accepted entry of value, created at now: a secret's hash and last four
// characters, or a private key's fingerprint and public key.
func Entry(alg m2mv1alpha1.KeyAlgorithm, value string, now time.Time) (m2mv1alpha1.AcceptedSecret, error) {
	e := m2mv1alpha1.AcceptedSecret{CreatedAt: metav1.NewTime(now)}
	if alg == "" {
		e.Hash, e.LastFour = Hash(value), LastFour(value)
		return e, nil
	}
	_, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	if err != nil {
		return e, err
	}
	e.Hash = HashPrefix + pub.KeyID
	e.PublicKey = &m2mv1alpha1.ClientPublicKey{KeyID: pub.KeyID, KeyType: pub.KeyType, Algorithm: pub.Algorithm,
		Curve: pub.Curve, X: pub.X, Y: pub.Y, N: pub.N, E: pub.E}
	return e, nil
}

// JWK is k, a public key of the API (spec.authentication.publicKeys or an accepted entry), as
// the jwk package's key, which turns it into a crypto key.
func JWK(k *m2mv1alpha1.ClientPublicKey) jwk.Key {
	return jwk.Key{KeyID: k.KeyID, KeyType: k.KeyType, Algorithm: k.Algorithm, Curve: k.Curve, X: k.X, Y: k.Y, N: k.N, E: k.E}
}

// Problem says why a credential someone wrote into the Secret is refused, or returns "" for one
// the manager accepts: a secret must pass StrengthProblem; a private key must be a PKCS #8 PEM
// key of alg.
func Problem(alg m2mv1alpha1.KeyAlgorithm, value string) string {
	if alg == "" {
		return StrengthProblem(value)
	}
	signer, pub, err := jwk.ParsePrivateKeyPEM([]byte(value))
	switch {
	case err != nil:
		return fmt.Sprintf("not a usable private key (%v)", err)
	case pub.Algorithm != string(alg) || !signingkeys.Matches(signingkeys.Algorithm(alg), signer):
		return fmt.Sprintf("a %s key, not the %s key that spec.authentication.keyPair asks for", pub.Algorithm, alg)
	}
	if rsaKey, ok := signer.Public().(*rsa.PublicKey); ok && rsaKey.N.BitLen() > MaxAdoptedRSABits {
		// Every reconcile parses it and every assertion verifies with it.
		return fmt.Sprintf("an RSA key of %d bits; at most %d are accepted", rsaKey.N.BitLen(), MaxAdoptedRSABits)
	}
	return ""
}
