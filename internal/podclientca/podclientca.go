// Package podclientca is the CA of the manager's pod certificate signer (m2m.dev/pod-client): it
// makes the CA, and issues the client certificates that the kubelet mounts into pods of the
// ServiceAccounts an M2MClient names (spec.authentication.podCertificates). The token server
// trusts the CA's certificate, which the manager publishes in a ConfigMap, and authorises on the
// leaf's one URI SAN alone.
package podclientca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/servingcert"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// Names of the objects the manager keeps in its own namespace.
const (
	// ConfigMapName is the public ConfigMap of the CA certificates (key CertKey) that the token
	// server trusts for client certificates (--client-ca-file).
	ConfigMapName = "m2m-pod-client-ca"
	// SecretName is the Secret of the CA's certificate and private key, which only the manager
	// reads.
	SecretName = "m2m-pod-client-ca-key"
)

// Component is the value of the component label of both objects.
const Component = "pod-client-ca"

// Keys of the Secret and of the ConfigMap.
const (
	// CertKey is the PEM CA certificate, in the Secret and (as the bundle the token server
	// trusts) in the ConfigMap.
	CertKey = servingcert.CACert
	// KeyKey is the CA's PKCS #8 PEM private key, in the Secret only.
	KeyKey = servingcert.CAKey
)

// CAValidity is the lifetime of a CA.
const CAValidity = 10 * 365 * 24 * time.Hour

// NewCA makes a self-signed P-256 CA valid from now for CAValidity.
func NewCA(now time.Time) (*servingcert.KeyPair, error) {
	return servingcert.NewNamedCA("m2m-operator pod client CA", now, CAValidity)
}

// PublicKeyOf returns the subject public key of the kubelet's stub PKCS #10 request. The API
// server has checked its signature (proof of possession) and key type on create; the check here
// costs little and keeps the signer from trusting a copy of the request that did not pass there.
func PublicKeyOf(stubPKCS10 []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(stubPKCS10)
	if err != nil {
		return nil, fmt.Errorf("the stub PKCS #10 request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the stub PKCS #10 request's signature: %w", err)
	}
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return pub, nil
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < 2048 {
			return nil, fmt.Errorf("an RSA key of %d bits", bits)
		}
		return pub, nil
	default:
		return nil, fmt.Errorf("a public key of type %T", pub)
	}
}

// Leaf is what Issue makes a certificate for.
type Leaf struct {
	PublicKey                 crypto.PublicKey
	Namespace, ServiceAccount string
	// Pod is the subject's common name: informational only, never authorised on.
	Pod                 string
	NotBefore, NotAfter time.Time
}

// Issue signs a client certificate for l with ca: ExtKeyUsage ClientAuth only, exactly one URI
// SAN (URI) and no other name. It returns the certificate's PEM and the parsed certificate.
func Issue(ca *servingcert.KeyPair, l Leaf) ([]byte, *x509.Certificate, error) {
	if l.NotAfter.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("the certificate would outlive the CA (%s)", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if l.Namespace == "" || l.ServiceAccount == "" {
		return nil, nil, errors.New("a pod certificate needs a namespace and a ServiceAccount")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: l.Pod},
		NotBefore:             l.NotBefore,
		NotAfter:              l.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{m2mv1alpha1.PodIdentity(l.Namespace, l.ServiceAccount)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, l.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// Contains reports whether the PEM bundle holds cert: whether the token server, once it reads
// the bundle, trusts what cert signs.
func Contains(bundle []byte, cert *x509.Certificate) bool {
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" && string(b.Bytes) == string(cert.Raw) {
			return true
		}
	}
}

// newSerial is a random 128-bit serial number.
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
