// Package signingkeys holds the JWT signing keys that the manager owns and the token server uses:
// their generation, their storage in one Secret, and their public form as a JWK Set (RFC 7517).
package signingkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/keyring"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// DataKey is the key of the signing-key Secret's data that holds the key set.
const DataKey = "keys.json"

// Algorithm is a JWS algorithm the token server signs with.
type Algorithm string

const (
	// ES256 is ECDSA on P-256 with SHA-256: the default, chosen for signing speed and small tokens.
	ES256 Algorithm = "ES256"
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key, for verifiers that know nothing else.
	RS256 Algorithm = "RS256"
	// EdDSA is Ed25519.
	EdDSA Algorithm = "EdDSA"
)

// Algorithms are the algorithms that can be chosen, in the order they are documented.
var Algorithms = []Algorithm{ES256, RS256, EdDSA}

// ParseAlgorithm checks a configured algorithm name.
func ParseAlgorithm(s string) (Algorithm, error) {
	a := Algorithm(s)
	if !slices.Contains(Algorithms, a) {
		return "", fmt.Errorf("signing algorithm %q is not one of ES256, RS256, EdDSA", s)
	}
	return a, nil
}

// State is where a key is in its life (keyring.State): next keys are published in the JWKS but
// do not sign yet, so that verifiers that cache the JWKS know them before the first token signed
// with them arrives; the active key signs; retired keys stay published while tokens they signed
// may be valid.
type State = keyring.State

const (
	StateNext    = keyring.StateNext
	StateActive  = keyring.StateActive
	StateRetired = keyring.StateRetired
)

// Key is one signing key.
type Key struct {
	KID       string    `json:"kid"`
	Algorithm Algorithm `json:"alg"`
	// Life is the key's state and its times (state, createdAt, activeAt, retiredAt).
	keyring.Life
	// SignsFrom, on a next key published because someone asked for a rotation (keyring.RotateAnnotation),
	// is when it signs: once published for the prepublish time, whatever is left of the active
	// key's period. Unset for a scheduled rotation.
	SignsFrom *time.Time `json:"signsFrom,omitempty"`
	// PrivateKey is PKCS #8 DER. It is only ever in the Secret and in memory.
	PrivateKey []byte `json:"privateKey"`

	signer crypto.Signer
}

// Signer returns the parsed private key.
func (k *Key) Signer() crypto.Signer { return k.signer }

// Method returns the golang-jwt signing method of the key.
func (k *Key) Method() jwt.SigningMethod {
	switch k.Algorithm {
	case ES256:
		return jwt.SigningMethodES256
	case RS256:
		return jwt.SigningMethodRS256
	default:
		return jwt.SigningMethodEdDSA
	}
}

// SigningKey is what golang-jwt's Sign takes for this key's method.
func (k *Key) SigningKey() any {
	if ed, ok := k.signer.(ed25519.PrivateKey); ok {
		return ed
	}
	return k.signer
}

// Set is the content of the signing-key Secret.
type Set struct {
	Keys []*Key `json:"keys"`
}

// NewSigner makes a private key of alg: P-256 for ES256, 2048-bit RSA for RS256, Ed25519 for
// EdDSA.
func NewSigner(alg Algorithm) (crypto.Signer, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		return rsa.GenerateKey(rand.Reader, 2048)
	case EdDSA:
		_, signer, err := ed25519.GenerateKey(rand.Reader)
		return signer, err
	}
	return nil, fmt.Errorf("signing algorithm %q is not supported", alg)
}

// Generate makes a new key of alg in state, created at now.
func Generate(alg Algorithm, state State, now time.Time) (*Key, error) {
	signer, err := NewSigner(alg)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, err
	}
	kid := make([]byte, 12)
	if _, err := rand.Read(kid); err != nil {
		return nil, err
	}
	return &Key{
		KID:        base64.RawURLEncoding.EncodeToString(kid),
		Algorithm:  alg,
		Life:       keyring.NewLife(state, now),
		PrivateKey: der,
		signer:     signer,
	}, nil
}

// Parse reads a key set from the Secret's data and checks it: every key parses and matches its
// algorithm, kids are unique, and at most one key is active.
func Parse(data []byte) (*Set, error) {
	if len(data) == 0 {
		return nil, errors.New("the signing-key Secret has no " + DataKey)
	}
	var s Set
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("the signing-key Secret's %s is not valid JSON: %w", DataKey, err)
	}
	kids := map[string]bool{}
	active := 0
	for i, k := range s.Keys {
		if k == nil || k.KID == "" {
			return nil, fmt.Errorf("signing key %d has no kid", i)
		}
		if kids[k.KID] {
			return nil, fmt.Errorf("signing key %q appears twice", k.KID)
		}
		kids[k.KID] = true
		switch k.State {
		case StateActive:
			active++
		case StateNext, StateRetired:
		default:
			return nil, fmt.Errorf("signing key %q has unknown state %q", k.KID, k.State)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(k.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("signing key %q: the private key does not parse", k.KID)
		}
		signer, ok := parsed.(crypto.Signer)
		if !ok || !Matches(k.Algorithm, signer) {
			return nil, fmt.Errorf("signing key %q is not an %s key", k.KID, k.Algorithm)
		}
		k.signer = signer
	}
	if active > 1 {
		return nil, fmt.Errorf("the signing-key Secret has %d active keys; exactly one may sign", active)
	}
	return &s, nil
}

// Matches reports whether s is a key of alg that this package would make or accept.
func Matches(alg Algorithm, s crypto.Signer) bool {
	switch k := s.(type) {
	case *ecdsa.PrivateKey:
		return alg == ES256 && k.Curve == elliptic.P256()
	case *rsa.PrivateKey:
		return alg == RS256 && k.N.BitLen() >= 2048
	case ed25519.PrivateKey:
		return alg == EdDSA
	}
	return false
}

// Encode serialises the set for the Secret.
func (s *Set) Encode() ([]byte, error) {
	return json.Marshal(s)
}

// Active returns the key that signs, or nil.
func (s *Set) Active() *Key {
	for _, k := range s.Keys {
		if k.State == StateActive {
			return k
		}
	}
	return nil
}

// Find returns the key with kid, or nil.
func (s *Set) Find(kid string) *Key {
	for _, k := range s.Keys {
		if k.KID == kid {
			return k
		}
	}
	return nil
}

// PublicJWK returns the key's public half as a JWK.
func (k *Key) PublicJWK() jwk.Key {
	j, _ := jwk.FromPublicKey(k.signer.Public()) // Parse and Generate admit only supported keys
	j.Use, j.KeyID, j.Algorithm = "sig", k.KID, string(k.Algorithm)
	return j
}

// Published returns the JWKS of the keys a verifier may need at now: next and active keys, and
// retired keys that retired less than maxTokenAge ago (or at an unrecorded time), since tokens
// they signed may still be valid.
func (s *Set) Published(now time.Time, maxTokenAge time.Duration) jwk.Set {
	out := jwk.Set{Keys: []jwk.Key{}}
	for _, k := range s.Keys {
		if k.State == StateRetired && k.RetiredAt != nil && !now.Before(k.RetiredAt.Add(maxTokenAge)) {
			continue
		}
		out.Keys = append(out.Keys, k.PublicJWK())
	}
	return out
}
