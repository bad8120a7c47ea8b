// Package gateway is a public door in front of the token server, for tests and make dev: what a
// Gateway with an HTTPRoute and a BackendTLSPolicy does in a cluster. It terminates TLS with a
// certificate for the public name from a CA of its own (not the manager's), re-encrypts to the
// token server, verifying its certificate against the manager's CA bundle and the in-cluster
// host name, keeps the request's Host, and appends the caller's address to X-Forwarded-For. It
// routes the paths that the chart's HTTPRoute routes, and answers 404 to the others.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// Paths are the paths that the door routes, each exactly, as the chart's HTTPRoute does
// (m2m.publicPaths): what clients and verifiers outside use. Not /refusals, which takes a
// Kubernetes bearer token, nor the probes.
var Paths = []string{"/oauth2/token", "/oauth2/introspect", "/revocations", "/.well-known/jwks.json", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}

// Options say whom the door serves and where it sends them.
type Options struct {
	// Hosts are the public names (or addresses) its certificate covers.
	Hosts []string
	// Backend is the token server's in-cluster URL (https): the gateway connects to its host and
	// verifies that the certificate names that host, as a BackendTLSPolicy's hostname.
	Backend string
	// BackendCAFile is the PEM bundle that must sign the backend's certificate (the manager's CA),
	// read again for every new connection, since an emergency CA rotation replaces it.
	BackendCAFile string
	// Source is the local address the gateway connects to the backend from, which the token
	// server's --trusted-proxies names; empty lets the system choose.
	Source string
}

// Gateway is a running door.
type Gateway struct {
	// CA is the PEM certificate of the door's own CA, for the callers to trust.
	CA        []byte
	server    *http.Server
	transport *http.Transport
	done      chan error
}

// Start serves the door on ln until Close.
func Start(ln net.Listener, o Options) (*Gateway, error) {
	backend, err := url.Parse(o.Backend)
	if err != nil || backend.Scheme != "https" || backend.Host == "" {
		return nil, fmt.Errorf("the backend %q is not an https URL: the gateway re-encrypts", o.Backend)
	}
	now := time.Now()
	ca, err := servingcert.NewCA(now, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	leaf, err := servingcert.Issue(ca, o.Hosts, now, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if o.Source != "" {
		ip := net.ParseIP(o.Source)
		if ip == nil {
			return nil, fmt.Errorf("the source %q is not an IP address", o.Source)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	transport := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			pool, err := readPool(o.BackendCAFile)
			if err != nil {
				return nil, err
			}
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(conn, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: backend.Hostname()})
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			return tc, nil
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend)
			// The token server tells its doors apart by Host (the metadata names the endpoints
			// of the door it was fetched through), as behind a Gateway, which keeps it.
			r.Out.Host = r.In.Host
			// Rewrite drops the X-Forwarded-* the caller sent; a proxy appends to them, and the
			// token server reads only the hops that its trusted proxies wrote.
			r.Out.Header["X-Forwarded-For"] = r.In.Header["X-Forwarded-For"]
			r.SetXForwarded()
		},
		Transport: transport,
	}
	routes := http.NewServeMux()
	for _, p := range Paths {
		routes.Handle(p, proxy) // a pattern without a trailing slash matches that path only
	}
	g := &Gateway{
		CA:        ca.CertPEM,
		transport: transport,
		done:      make(chan error, 1),
		server: &http.Server{
			Handler:           routes,
			ReadHeaderTimeout: 5 * time.Second,
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		},
	}
	go func() { g.done <- g.server.ServeTLS(ln, "", "") }()
	return g, nil
}

// Close stops serving and closes the connections to the backend.
func (g *Gateway) Close() error {
	err := g.server.Close()
	if serveErr := <-g.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	g.transport.CloseIdleConnections()
	return err
}

func readPool(file string) (*x509.CertPool, error) {
	bundle, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("the backend's CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("the backend's CA bundle %s holds no certificate", file)
	}
	return pool, nil
}
