package jwk

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"testing"
)

func rsaJWK(n *big.Int, e int) Key {
	b64 := base64.RawURLEncoding.EncodeToString
	return Key{KeyType: "RSA", KeyID: "k", N: b64(n.Bytes()), E: b64(big.NewInt(int64(e)).Bytes())}
}

func TestRSAKeysOfUnusualSizeOrExponentAreRefused(t *testing.T) {
	k2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	huge := new(big.Int).Lsh(big.NewInt(1), 8200) // an 8201-bit modulus
	for sentence, tc := range map[string]struct {
		key Key
		ok  bool
	}{
		"a 2048-bit key with exponent 65537 is accepted": {rsaJWK(k2048.N, 65537), true},
		"a 1024-bit key is refused":                      {rsaJWK(k1024.N, 65537), false},
		"a key over 8192 bits is refused":                {rsaJWK(huge, 65537), false},
		"exponent 3 is refused":                          {rsaJWK(k2048.N, 3), false},
		"exponent 1 is refused":                          {rsaJWK(k2048.N, 1), false},
	} {
		t.Run(sentence, func(t *testing.T) {
			if _, err := tc.key.PublicKey(); (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
		})
	}
}
