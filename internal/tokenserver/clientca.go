package tokenserver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// clientCAFile is the pod-client CA bundle of --client-ca-file, a mounted ConfigMap that the
// manager rewrites when its CA is replaced (the new CA alone). The file is looked at on every
// handshake and read again when its size or modification time changes, so that a new CA is
// trusted from the next handshake on. A file that cannot be read or holds no certificate keeps
// the pool read before. Until the file first holds a certificate (the chart mounts the ConfigMap
// as optional, and the manager publishes it only when its signer runs), the listener asks for no
// client certificate: every other way to authenticate is served, and tls_client_auth starts
// with the first handshake after the CA appears.
type clientCAFile struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	pem     []byte
	current *x509.CertPool
}

func (c *clientCAFile) pool() (*x509.CertPool, error) {
	fi, err := os.Stat(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && (c.current == nil || !fi.ModTime().Equal(c.modTime) || fi.Size() != c.size) {
		if b, rerr := os.ReadFile(c.path); rerr == nil && (c.current == nil || !bytes.Equal(b, c.pem)) {
			if p := x509.NewCertPool(); p.AppendCertsFromPEM(b) {
				c.current, c.pem = p, b
			}
		}
		c.modTime, c.size = fi.ModTime(), fi.Size()
	}
	if c.current == nil {
		return nil, fmt.Errorf("--client-ca-file %s holds no PEM certificate", c.path)
	}
	return c.current, nil
}

// configFor is the listener's GetConfigForClient: base, asking for a client certificate and
// verifying one given against the pool as it is now. A client without one is served as before
// (VerifyClientCertIfGiven): every other way to authenticate stays open.
func (c *clientCAFile) configFor(base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := c.pool()
		if err != nil {
			// nil: the handshake goes on with base, which asks for no client certificate.
			return nil, nil
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
		return cfg, nil
	}
}
