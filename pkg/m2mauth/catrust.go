package m2mauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// caFile trusts the system's roots and the PEM bundle in a file that may change (a mounted
// Secret's ca.crt, which the manager rewrites when its CA rotates). The file is read again when
// its size or modification time changes, so that a new CA is trusted from the next handshake on,
// without a new client.
type caFile struct {
	path string
	// optional: without the file, the system's roots alone (a Secret without ca.crt).
	optional bool
	// clientCert, when set, is presented to servers that ask for a client certificate.
	clientCert *podCertificate

	mu      sync.Mutex
	modTime time.Time
	size    int64
	pem     []byte
	pool    *x509.CertPool
}

// roots returns the pool for the file as it is now. A file that cannot be read or holds no
// certificate keeps the pool read before; with none before, it is an error.
func (c *caFile) roots() (*x509.CertPool, error) {
	fi, err := os.Stat(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && c.optional && c.pool == nil {
		return x509.SystemCertPool()
	}
	if err == nil && (c.pool == nil || !fi.ModTime().Equal(c.modTime) || fi.Size() != c.size) {
		if b, rerr := os.ReadFile(c.path); rerr == nil && (c.pool == nil || !bytes.Equal(b, c.pem)) {
			pool, perr := x509.SystemCertPool()
			if perr != nil {
				pool = x509.NewCertPool()
			}
			if pool.AppendCertsFromPEM(b) {
				c.pool, c.pem = pool, b
			}
		}
		c.modTime, c.size = fi.ModTime(), fi.Size()
	}
	if c.pool == nil {
		return nil, fmt.Errorf("m2mauth: no CA certificate in %s", c.path)
	}
	return c.pool, nil
}

// dialTLS connects with crypto/tls's own verification (chain, host name, server-auth usage)
// against roots() as they are at this handshake.
func (c *caFile) dialTLS(dialer *net.Dialer, handshakeTimeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		roots, err := c.roots()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host}
		if c.clientCert != nil {
			cfg.GetClientCertificate = c.clientCert.getClientCertificate
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

// proxiedTLS verifies, at each handshake the transport makes itself (through a proxy), the
// chain, the server name and the server-auth usage against roots() as they are then.
// crypto/tls's own check is replaced because its roots are fixed at configuration.
func (c *caFile) proxiedTLS() *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection does all of the verification
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.ServerName == "" || len(cs.PeerCertificates) == 0 {
				return errors.New("m2mauth: no server name or certificate to verify")
			}
			roots, err := c.roots()
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: cs.ServerName,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
	if c.clientCert != nil {
		cfg.GetClientCertificate = c.clientCert.getClientCertificate
	}
	return cfg
}

// withCAFile returns hc's copy whose transport trusts the system's roots and the bundle in path
// (if optional, only once the file exists), for direct and proxied connections.
func withCAFile(hc *http.Client, path string, optional bool) *http.Client {
	return withTLSFiles(hc, path, optional, nil)
}

// withTLSFiles is withCAFile, presenting cert (when set) to servers that ask for a client
// certificate. With cert, every request opens a connection of its own, whose handshake presents
// the certificate as it is then: a kept-alive connection would go on presenting the one before a
// rotation, and the token asked for over it would be bound to that one.
func withTLSFiles(hc *http.Client, path string, optional bool, cert *podCertificate) *http.Client {
	t, ok := hc.Transport.(*http.Transport)
	if !ok {
		return hc // a caller's own transport is the caller's to configure
	}
	t = t.Clone()
	if cert != nil {
		t.DisableKeepAlives = true
	}
	ca := &caFile{path: path, optional: optional, clientCert: cert}
	t.DialTLSContext = ca.dialTLS(&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}, t.TLSHandshakeTimeout)
	// Through a proxy (HTTPS_PROXY), the transport makes the TLS connection itself, with this.
	t.TLSClientConfig = ca.proxiedTLS()
	out := *hc
	out.Transport = t
	return &out
}

// WithCAFile trusts, besides the system's roots, the PEM CA bundle in path for metadata and JWKS
// fetches: for example the ca.crt of a mounted credentials Secret, when the manager issues the
// token server's certificate. The file is read again when it changes. It has no effect with
// WithHTTPClient.
func WithCAFile(path string) VerifierOption {
	return func(c *verifierConfig) { c.caFile = path }
}
