package podclientca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/podclientca"
)

func TestAnIssuedCertificateNamesTheServiceAccountAloneForClientAuthAndChainsToTheCA(t *testing.T) {
	now := time.Now()
	ca, err := podclientca.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, pub := range map[string]crypto.PublicKey{"ECDSA P-384": ecKey.Public(), "Ed25519": edPub, "RSA 3072": rsaKey.Public()} {
		t.Run(name, func(t *testing.T) {
			pemCert, cert, err := podclientca.Issue(ca, podclientca.Leaf{
				PublicKey: pub, Namespace: "team", ServiceAccount: "web", Pod: "web-1",
				NotBefore: now.Truncate(time.Second), NotAfter: now.Add(time.Hour).Truncate(time.Second),
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(pemCert) == 0 {
				t.Fatal("no PEM")
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://m2m.dev/ns/team/sa/web" {
				t.Errorf("URI SANs %v, want exactly spiffe://m2m.dev/ns/team/sa/web", cert.URIs)
			}
			if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
				t.Errorf("other names: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || cert.IsCA {
				t.Errorf("ExtKeyUsage %v, IsCA %v; want ClientAuth alone, not a CA", cert.ExtKeyUsage, cert.IsCA)
			}
			if cert.Subject.CommonName != "web-1" {
				t.Errorf("CN %q, want the pod's name", cert.Subject.CommonName)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
				t.Error("the certificate is not of the request's key")
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now.Add(time.Minute)}); err != nil {
				t.Errorf("does not verify as a client certificate of the CA: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: now.Add(time.Minute)}); err == nil {
				t.Error("verifies as a server certificate")
			}
		})
	}
}

func TestACertificateNeverOutlivesItsCA(t *testing.T) {
	now := time.Now()
	ca, err := podclientca.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, _, err = podclientca.Issue(ca, podclientca.Leaf{
		PublicKey: key.Public(), Namespace: "team", ServiceAccount: "web", Pod: "p",
		NotBefore: now, NotAfter: ca.Cert.NotAfter.Add(time.Second),
	})
	if err == nil {
		t.Fatal("issued a certificate that outlives the CA")
	}
}

func TestTheStubRequestMustBeSignedByItsKey(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := podclientca.PublicKeyOf(der)
	if err != nil || !key.PublicKey.Equal(pub) {
		t.Fatalf("a good request: %v, %v", pub, err)
	}
	// The signature is the last bytes of the DER: flipping one breaks the proof of possession.
	bad := slices.Clone(der)
	bad[len(bad)-2] ^= 0xff
	if _, err := podclientca.PublicKeyOf(bad); err == nil {
		t.Fatal("accepted a request whose signature does not verify")
	}
}

func TestTheBundleContainsTheCAItWasMadeOf(t *testing.T) {
	now := time.Now()
	a, _ := podclientca.NewCA(now)
	b, _ := podclientca.NewCA(now)
	if !podclientca.Contains(append(append([]byte{}, b.CertPEM...), a.CertPEM...), a.Cert) {
		t.Error("a bundle of b and a does not contain a")
	}
	if podclientca.Contains(b.CertPEM, a.Cert) {
		t.Error("b's bundle contains a")
	}
}
