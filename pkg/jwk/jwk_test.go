package jwk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
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

func TestThumbprintsMatchTheRFCExamples(t *testing.T) {
	// RFC 7638 §3.1 (RSA) and RFC 8037 Appendix A.3 (Ed25519).
	rsaKey := Key{KeyType: "RSA", KeyID: "2011-04-29", Algorithm: "RS256", E: "AQAB",
		N: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
	okp := Key{KeyType: "OKP", Curve: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
	for name, tc := range map[string]struct {
		key  Key
		want string
	}{
		"the RSA key of RFC 7638":     {rsaKey, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
		"the Ed25519 key of RFC 8037": {okp, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
	} {
		got, err := tc.key.Thumbprint()
		if err != nil || got != tc.want {
			t.Errorf("%s: thumbprint %q, %v; want %q", name, got, err, tc.want)
		}
	}
}

func TestAThumbprintOfAParameterThatNeedsJSONEscapingIsRefused(t *testing.T) {
	if _, err := (Key{KeyType: "OKP", Curve: "Ed25519", X: `a","kty":"RSA`}).Thumbprint(); err == nil {
		t.Fatal("a parameter with quotes was hashed")
	}
}

func TestFromPublicKeyRoundTripsEveryKeyType(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, pub := range map[string]crypto.PublicKey{"EC": &ec.PublicKey, "RSA": &rs.PublicKey, "OKP": edPub} {
		j, err := FromPublicKey(pub)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := j.PublicKey()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !back.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("%s: the key did not survive the round trip", name)
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := FromPublicKey(&p384.PublicKey); err == nil {
		t.Error("a P-384 key was turned into a JWK that claims ES256")
	}
}

// A private_key is tenant-written input (anyone who may edit the Secret): everything but one
// PKCS #8 PEM key of a supported type and size is an error, and no error quotes the key.
func TestParsePrivateKeyPEMRefusesWhatIsNotOneUsableKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, err := MarshalPrivateKeyPEM(ec)
	if err != nil {
		t.Fatal(err)
	}
	if _, pub, err := ParsePrivateKeyPEM(good); err != nil || pub.Algorithm != "ES256" || pub.KeyID == "" {
		t.Fatalf("a P-256 key: %+v, %v", pub, err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384PEM, _ := MarshalPrivateKeyPEM(p384)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa1024PEM, _ := MarshalPrivateKeyPEM(rsa1024)
	der, _ := x509.MarshalECPrivateKey(ec)
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	for name, in := range map[string][]byte{
		"empty":                             nil,
		"not PEM":                           []byte("hunter2"),
		"a SEC 1 key, not PKCS #8":          sec1,
		"two keys":                          append(append([]byte{}, good...), good...),
		"a key with trailing text":          append(append([]byte{}, good...), []byte("junk")...),
		"a PKCS #8 block of garbage":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage")}),
		"a P-384 key":                       p384PEM,
		"a 1024-bit RSA key":                rsa1024PEM,
		"a certificate where a key belongs": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		_, _, err := ParsePrivateKeyPEM(in)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "PRIVATE KEY-----") || (len(in) > 40 && strings.Contains(err.Error(), string(in[30:40]))) {
			t.Errorf("%s: the error quotes the input: %v", name, err)
		}
	}
}
