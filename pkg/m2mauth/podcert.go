package m2mauth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// ErrCertificateBound: the token is bound to a client certificate (cnf x5t#S256, RFC 8705 §3)
// and the request did not come over TLS with that certificate, verified; or it came to
// Authenticate, which sees no connection.
var ErrCertificateBound = errors.New("m2mauth: the token is bound to a client certificate the request did not present")

// PodCertificate makes NewTokenSource authenticate with the pod certificate in the credential
// bundle at bundlePath instead of a client secret: mutual TLS with client_id and no other
// credential (tls_client_auth, RFC 8705 §2), for a client whose
// spec.authentication.podCertificates lists the pod's ServiceAccount. The bundle is the file a
// podCertificate projected volume (signer m2m.dev/pod-client) writes at its
// credentialBundlePath: a PKCS #8 PRIVATE KEY block, then the certificate chain from the leaf on.
// It is read again when it changes (the kubelet rotates it), and a token is replaced once the
// certificate it is bound to is: its tokens are bound to the certificate, so NewTransport and
// NewClient present the same certificate to resource servers. The token server must be reached
// over https, without a proxy that terminates TLS in between. It goes with NewTokenSource only,
// and not with DPoP.
func PodCertificate(bundlePath string) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.podCert = &podCertificate{path: bundlePath} }
}

// podCertificate is the credential bundle of a pod certificate, read again on each use whose
// look at the file finds its size or modification time changed. A file that cannot be read or
// does not parse keeps the certificate read before.
type podCertificate struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	raw     []byte
	cert    *tls.Certificate
	// thumb is the leaf's x5t#S256.
	thumb string
}

// current returns the certificate as the file holds it now, and its x5t#S256.
func (p *podCertificate) current() (*tls.Certificate, string, error) {
	fi, err := os.Stat(p.path)
	p.mu.Lock()
	defer p.mu.Unlock()
	var perr error
	if err == nil && (p.cert == nil || !fi.ModTime().Equal(p.modTime) || fi.Size() != p.size) {
		if b, rerr := os.ReadFile(p.path); rerr != nil {
			perr = rerr
		} else if p.cert == nil || !bytes.Equal(b, p.raw) {
			if cert, thumb, berr := parseCredentialBundle(b); berr == nil {
				p.cert, p.thumb, p.raw = cert, thumb, b
			} else {
				perr = berr
			}
		}
		p.modTime, p.size = fi.ModTime(), fi.Size()
	}
	if p.cert == nil {
		return nil, "", fmt.Errorf("m2mauth: no pod certificate in %s: %w", p.path, errors.Join(err, perr))
	}
	return p.cert, p.thumb, nil
}

// thumbprint is the current certificate's x5t#S256, "" without one.
func (p *podCertificate) thumbprint() string {
	_, thumb, _ := p.current()
	return thumb
}

// getClientCertificate is a tls.Config's GetClientCertificate: the current certificate at each
// handshake.
func (p *podCertificate) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	cert, _, err := p.current()
	return cert, err
}

// parseCredentialBundle reads a kubelet credential bundle: the key first, then the chain.
// tls.X509KeyPair refuses a first block that is no private key, and a key that is not the leaf's.
func parseCredentialBundle(b []byte) (*tls.Certificate, string, error) {
	keyBlock, rest := pem.Decode(b)
	if keyBlock == nil {
		return nil, "", errors.New("the credential bundle holds no PEM block")
	}
	var chain []byte
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, "", fmt.Errorf("the credential bundle holds a %s block after the key", block.Type)
		}
		chain = append(chain, pem.EncodeToMemory(block)...)
	}
	cert, err := tls.X509KeyPair(chain, pem.EncodeToMemory(keyBlock))
	if err != nil {
		return nil, "", fmt.Errorf("the credential bundle: %w", err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return &cert, base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// podCertHolder is a token source whose tokens are bound to a pod certificate.
type podCertHolder interface {
	podCertificate() *podCertificate
}

// withClientCertificate returns base (http.DefaultTransport when nil) presenting cert's
// certificate to servers that ask for one, when base is an *http.Transport (cloned: the caller's
// stays as it was); another RoundTripper is returned as it is, and its TLS configuration is the
// caller's to make (ClientCertificate).
func withClientCertificate(base http.RoundTripper, cert *podCertificate) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t, ok := base.(*http.Transport)
	if !ok {
		return base
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.GetClientCertificate = cert.getClientCertificate
	return t
}

// ClientCertificate returns, for a token source made with PodCertificate, the function that a
// tls.Config's GetClientCertificate takes to present the certificate its tokens are bound to;
// ok is false for any other source. NewTransport and NewClient set it themselves on an
// *http.Transport; a client with another transport (gRPC, say) sets it in its own TLS
// configuration.
func ClientCertificate(ts oauth2.TokenSource) (get func(*tls.CertificateRequestInfo) (*tls.Certificate, error), ok bool) {
	h, ok := ts.(podCertHolder)
	if !ok || h.podCertificate() == nil {
		return nil, false
	}
	return h.podCertificate().getClientCertificate, true
}

// certBinding is what AuthenticateRequest learnt from the connection: the x5t#S256 of the
// verified client certificate.
type certBinding struct{ thumb string }

// peerBinding returns r's verified client certificate's binding; nil without one. A certificate
// the server did not verify (tls.RequireAnyClientCert) is not taken: the binding says that the
// caller holds the key of a certificate the resource server trusts.
func peerBinding(r *http.Request) *certBinding {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	sum := sha256.Sum256(r.TLS.VerifiedChains[0][0].Raw)
	return &certBinding{thumb: base64.RawURLEncoding.EncodeToString(sum[:])}
}

// withPeer gives Authenticate the binding of r's verified client certificate, if any.
func withPeer(r *http.Request) AuthOption {
	b := peerBinding(r)
	return func(c *authConfig) { c.cert = b }
}

// checkCertificate checks a token bound to the certificate of thumbprint x5t against the
// request's.
func (cfg *authConfig) checkCertificate(x5t any) error {
	want, _ := x5t.(string)
	switch {
	case cfg.cert == nil:
		return fmt.Errorf("%w: it came without a verified client certificate", ErrCertificateBound)
	case want == "" || subtle.ConstantTimeCompare([]byte(want), []byte(cfg.cert.thumb)) != 1:
		return fmt.Errorf("%w: the client certificate is not the one the token is bound to", ErrCertificateBound)
	}
	return nil
}
