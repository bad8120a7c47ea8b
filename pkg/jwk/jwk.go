// Package jwk holds the JSON Web Key wire types (RFC 7517) of the keys that sign m2m-operator's
// access tokens and of the key pairs clients sign their assertions with: what the token server
// publishes, what verifiers read, and the private keys of credentials Secrets. It depends on the
// standard library alone, so that pkg/m2mauth stays free of Kubernetes modules.
package jwk

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"filippo.io/edwards25519"
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
		// A point of small order verifies signatures that anyone can make (the identity
		// point verifies R = B, S = 1 on every message): such a key is held by nobody, so a
		// signature by it proves nothing. A non-canonical encoding is refused too, so that one
		// key has one thumbprint.
		p, err := new(edwards25519.Point).SetBytes(x)
		if err != nil || !bytes.Equal(p.Bytes(), x) || new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
			return nil, fmt.Errorf("OKP key %q is not a usable Ed25519 key", j.KeyID)
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("key type %q is not supported", j.KeyType)
}

// FromPublicKey returns the public parameters of pub as a JWK (kty, crv, x, y, n, e), with the
// algorithm it signs with: ES256 for P-256, RS256 for RSA, EdDSA for Ed25519. KeyID and Use are
// left to the caller.
func FromPublicKey(pub crypto.PublicKey) (Key, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return Key{}, errors.New("only P-256 EC keys are supported")
		}
		raw, err := p.Bytes() // 0x04 || X || Y, each padded to 32 bytes as RFC 7518 §6.2.1.2 asks
		if err != nil {
			return Key{}, err
		}
		return Key{KeyType: "EC", Algorithm: "ES256", Curve: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:])}, nil
	case *rsa.PublicKey:
		return Key{KeyType: "RSA", Algorithm: "RS256", N: b64(p.N.Bytes()), E: b64(big.NewInt(int64(p.E)).Bytes())}, nil
	case ed25519.PublicKey:
		return Key{KeyType: "OKP", Algorithm: "EdDSA", Curve: "Ed25519", X: b64(p)}, nil
	}
	return Key{}, fmt.Errorf("key type %T is not supported", pub)
}

// Thumbprint is the RFC 7638 JWK thumbprint of the key: the unpadded base64url SHA-256 of its
// required members, in lexicographic order, as JSON without white space. It names a key by its
// value, so that a kid needs no agreement between who holds the key and who checks it.
func (j Key) Thumbprint() (string, error) {
	var canonical string
	// The values are base64url or fixed names, so none needs JSON escaping; a value that would
	// is refused rather than hashed differently from other implementations.
	for _, v := range []string{j.Curve, j.X, j.Y, j.N, j.E} {
		if !isBase64URLOrName(v) {
			return "", fmt.Errorf("key %q has a parameter that is not base64url", j.KeyID)
		}
	}
	switch j.KeyType {
	case "EC":
		canonical = `{"crv":"` + j.Curve + `","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	case "RSA":
		canonical = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
	case "OKP":
		canonical = `{"crv":"` + j.Curve + `","kty":"OKP","x":"` + j.X + `"}`
	default:
		return "", fmt.Errorf("key type %q is not supported", j.KeyType)
	}
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

func isBase64URLOrName(s string) bool {
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ParsePrivateKeyPEM reads a PKCS #8 PEM private key (a P-256, RSA or Ed25519 key, as in the
// private_key of a credentials Secret) and returns it with its public JWK, whose KeyID is the
// key's RFC 7638 thumbprint and whose Algorithm is the one it signs with. RSA keys must be
// MinRSABits to MaxRSABits bits with exponent 65537. The error never contains key material.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, Key, error) {
	block, rest := pem.Decode(data)
	switch {
	case block == nil:
		return nil, Key{}, errors.New("not PEM")
	case block.Type != "PRIVATE KEY":
		return nil, Key{}, fmt.Errorf("a PEM block of type %q, not PRIVATE KEY (PKCS #8)", block.Type)
	case len(strings.TrimSpace(string(rest))) > 0:
		return nil, Key{}, errors.New("more than one PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, Key{}, errors.New("not a PKCS #8 private key")
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, Key{}, fmt.Errorf("a %T cannot sign", parsed)
	}
	pub, err := FromPublicKey(signer.Public())
	if err != nil {
		return nil, Key{}, err
	}
	if _, err := pub.PublicKey(); err != nil { // the RSA size and exponent rules
		return nil, Key{}, err
	}
	if pub.KeyID, err = pub.Thumbprint(); err != nil {
		return nil, Key{}, err
	}
	return signer, pub, nil
}

// MarshalPrivateKeyPEM encodes key as PKCS #8 PEM, the form ParsePrivateKeyPEM reads.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Sign signs input as JWS alg asks, through crypto.Signer alone, so that a key that never
// leaves its hardware can sign: ES256 wants r||s of 32 bytes each (RFC 7518 §3.4), not the DER
// that ecdsa signers return.
func Sign(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	if alg == "EdDSA" {
		return key.Sign(rand.Reader, input, crypto.Hash(0))
	}
	digest := sha256.Sum256(input)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || alg != "ES256" {
		return sig, err
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) > 0 {
		return nil, errors.New("the ECDSA signer did not return an ASN.1 signature")
	}
	if rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return nil, errors.New("the ECDSA signer returned a signature that is not a P-256 signature")
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}
