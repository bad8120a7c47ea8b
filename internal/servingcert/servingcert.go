// Package servingcert issues the token server's serving certificate from a CA that the manager
// keeps, and rotates both: the certificate well before it expires, and the CA with an overlap in
// which clients trust the old and the new CA, so that no TLS handshake fails across a rotation;
// or, in an emergency (a CA key or a serving key copied), at once, when failed handshakes until
// clients see the new CA are the price of no longer trusting the old one.
// Plan decides; the manager's reconciler acts.
package servingcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Keys of the CA Secret, which only the manager reads.
const (
	// CACert and CAKey are the CA that signs the serving certificate.
	CACert = "ca.crt"
	CAKey  = "ca.key"
	// NextCert and NextKey are the CA that takes over after the overlap; present during a CA
	// rotation only.
	NextCert = "next.crt"
	NextKey  = "next.key"
	// PreviousCert is the CA that signed before the last rotation, trusted until it is dropped.
	PreviousCert = "previous.crt"
	// Bundle is every CA clients must trust now: active, next and previous.
	Bundle = "bundle.crt"
)

// Annotations of the CA Secret that record when the steps of a CA rotation happened.
const (
	// NextSinceAnnotation is when the next CA was added to the bundle (RFC 3339).
	NextSinceAnnotation = "m2m.dev/next-ca-since"
	// PreviousUntilAnnotation is when the previous CA leaves the bundle (RFC 3339).
	PreviousUntilAnnotation = "m2m.dev/previous-ca-until"
)

// Keys of the serving-certificate Secret (kubernetes.io/tls), which the token server mounts.
const (
	TLSCert = "tls.crt"
	TLSKey  = "tls.key"
	// TLSCA is the bundle, for whoever mounts the Secret to reach the token server.
	TLSCA = "ca.crt"
)

// Policy is how long certificates live and how rotations overlap.
type Policy struct {
	// CAValidity is the lifetime of a CA.
	CAValidity time.Duration
	// CARenewBefore starts a CA rotation this long before the CA expires.
	CARenewBefore time.Duration
	// Overlap is how long the next CA is in the bundle before it signs, and how long the
	// previous one stays after: longer than pods take to see a changed Secret and reload it.
	Overlap time.Duration
	// CertValidity is the lifetime of a serving certificate; it is renewed after two thirds.
	CertValidity time.Duration
}

// DefaultPolicy: a CA of 10 years rotated a year before it ends, an overlap of a week, and
// serving certificates of 90 days, renewed after 60.
var DefaultPolicy = Policy{CAValidity: 10 * 365 * 24 * time.Hour, CARenewBefore: 365 * 24 * time.Hour, Overlap: 7 * 24 * time.Hour, CertValidity: 90 * 24 * time.Hour}

// Validate checks that the durations fit together.
func (p Policy) Validate() error {
	switch {
	case p.CAValidity <= 0 || p.CertValidity <= 0 || p.Overlap <= 0 || p.CARenewBefore <= 0:
		return errors.New("every certificate duration must be positive")
	case p.CARenewBefore >= p.CAValidity:
		return fmt.Errorf("the CA renewal time %s must be shorter than its validity %s", p.CARenewBefore, p.CAValidity)
	case 2*p.Overlap >= p.CARenewBefore:
		return fmt.Errorf("two overlaps (%s each) must fit in the CA renewal time %s", p.Overlap, p.CARenewBefore)
	case p.CertValidity >= p.CAValidity:
		return fmt.Errorf("the serving certificate validity %s must be shorter than the CA's %s", p.CertValidity, p.CAValidity)
	}
	return nil
}

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed P-256 CA valid from now for validity.
func NewCA(now time.Time, validity time.Duration) (*KeyPair, error) {
	return NewNamedCA("m2m-operator token server CA", now, validity)
}

// NewNamedCA is NewCA with the common name name and the time of its making.
func NewNamedCA(name string, now time.Time, validity time.Duration) (*KeyPair, error) {
	key, serial, err := newKeyAndSerial()
	if err != nil {
		return nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + " " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-time.Minute), // clocks differ a little
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tpl, tpl, key, key)
}

// Issue makes a serving certificate for hosts (DNS names or IP addresses), signed by ca.
func Issue(ca *KeyPair, hosts []string, now time.Time, validity time.Duration) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a serving certificate needs a host")
	}
	if !ca.Cert.NotAfter.After(now) {
		return nil, fmt.Errorf("the CA expired at %s", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, serial, err := newKeyAndSerial()
	if err != nil {
		return nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tpl.NotAfter.After(ca.Cert.NotAfter) {
		tpl.NotAfter = ca.Cert.NotAfter // never outlive the CA
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, h)
		}
	}
	return sign(tpl, ca.Cert, key, ca.Key)
}

// newKeyAndSerial makes a P-256 key and a random 128-bit serial number.
func newKeyAndSerial() (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return key, serial, err
}

func sign(tpl, parent *x509.Certificate, key, parentKey crypto.Signer) (*KeyPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{
		Cert: cert, Key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// Parse reads a certificate and its PKCS #8 key from PEM and checks that they belong together.
func Parse(certPEM, keyPEM []byte) (*KeyPair, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || cb.Type != "CERTIFICATE" || kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM certificate and PKCS #8 private key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, errors.New("the private key does not parse")
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, errors.New("the private key cannot sign")
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("the private key is not the certificate's")
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCert reads one PEM certificate.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// BundleOf concatenates the PEM certificates, skipping empty ones: what clients trust.
func BundleOf(certs ...[]byte) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		if len(c) > 0 {
			b.Write(bytes.TrimSpace(c))
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Covers reports whether cert is valid for every host.
func Covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return len(hosts) > 0 && !slices.ContainsFunc(hosts, func(h string) bool { return h == "" })
}
