package plugin

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"
)

// caBundle is PEM CA certificates that may sign the token server's certificate, and where they
// came from, for errors.
type caBundle struct {
	from string
	pem  []byte
}

// trustingClient is an HTTP client that trusts the system's roots and bundles, as a pod trusts
// the token server with its Secret's ca.crt.
func trustingClient(bundles ...caBundle) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, b := range bundles {
		if !pool.AppendCertsFromPEM(b.pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", b.from)
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}, nil
}
