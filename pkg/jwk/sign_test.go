package jwk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"io"
	"math/big"
	"testing"
)

// badECDSASigner claims a P-256 key and returns a DER signature with the r and s it is given.
type badECDSASigner struct {
	pub  crypto.PublicKey
	r, s *big.Int
}

func (b badECDSASigner) Public() crypto.PublicKey { return b.pub }
func (b badECDSASigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return asn1.Marshal(struct{ R, S *big.Int }{b.r, b.s})
}

// A broken or hostile HSM signer gets an error, never a panic in the caller or a signature
// that was silently changed.
func TestASignerThatReturnsNoP256SignatureIsAnErrorNotAPanic(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	big300 := new(big.Int).Lsh(big.NewInt(1), 300)
	for name, rs := range map[string][2]*big.Int{
		"an r over 256 bits": {big300, big.NewInt(1)},
		"a negative s":       {big.NewInt(1), big.NewInt(-5)},
		"a zero r":           {big.NewInt(0), big.NewInt(1)},
	} {
		if _, err := Sign(badECDSASigner{pub: &k.PublicKey, r: rs[0], s: rs[1]}, "ES256", []byte("input")); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if sig, err := Sign(k, "ES256", []byte("input")); err != nil || len(sig) != 64 {
		t.Fatalf("a real key: %d bytes, %v", len(sig), err)
	}
}
