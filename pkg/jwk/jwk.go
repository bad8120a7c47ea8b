// Package jwk holds the JSON Web Key wire types (RFC 7517) of the keys that sign m2m-operator's
// access tokens: what the token server publishes and what verifiers read. It depends on the
// standard library alone, so that pkg/m2mauth stays free of Kubernetes modules.
package jwk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
)

// Key is the public half of a signing key as a JSON Web Key (RFC 7517, 7518 §6, 8037).
type Key struct {
	KeyType   string `json:"kty"`
	Use       string `json:"use"`
	KeyID     string `json:"kid"`
	Algorithm string `json:"alg"`
	Curve     string `json:"crv,omitempty"`
	X         string `json:"x,omitempty"`
	Y         string `json:"y,omitempty"`
	N         string `json:"n,omitempty"`
	E         string `json:"e,omitempty"`
}

// Set is a JSON Web Key Set.
type Set struct {
	Keys []Key `json:"keys"`
}

// The RSA key sizes PublicKey accepts.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// PublicKey turns the JWK back into a public key. RSA keys must have MinRSABits to MaxRSABits
// bits and the exponent 65537.
func (j Key) PublicKey() (crypto.PublicKey, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch j.KeyType {
	case "EC":
		if j.Curve != "P-256" {
			return nil, fmt.Errorf("curve %q is not supported", j.Curve)
		}
		x, err1 := dec(j.X)
		y, err2 := dec(j.Y)
		if err := errors.Join(err1, err2); err != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("EC key %q has bad coordinates", j.KeyID)
		}
		// Uncompressed SEC 1 point: 0x04 || X || Y; ParseUncompressedPublicKey checks it is on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "RSA":
		n, err1 := dec(j.N)
		e, err2 := dec(j.E)
		if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("RSA key %q has bad parameters", j.KeyID)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		// Below 2048 bits is breakable; above 8192 makes every verification slow for nothing;
		// any exponent but 65537 is a sign of a key made by something unusual.
		if bits := pub.N.BitLen(); bits < MinRSABits || bits > MaxRSABits || pub.E != 65537 {
			return nil, fmt.Errorf("RSA key %q has %d bits and exponent %d; only %d to %d bits with exponent 65537 are accepted", j.KeyID, bits, pub.E, MinRSABits, MaxRSABits)
		}
		return pub, nil
	case "OKP":
		x, err := dec(j.X)
		if err != nil || j.Curve != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("OKP key %q is not an Ed25519 key", j.KeyID)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("key type %q is not supported", j.KeyType)
}
