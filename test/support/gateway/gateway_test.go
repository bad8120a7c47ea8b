package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// backend is an HTTPS server that echoes the Host and X-Forwarded-For it got and the address the
// request came from, with a certificate for hosts from a CA whose bundle is in the returned file.
func backend(t *testing.T, hosts ...string) (url, caFile string) {
	t.Helper()
	now := time.Now()
	ca, err := servingcert.NewCA(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := servingcert.Issue(ca, hosts, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host+"|"+r.Header.Get("X-Forwarded-For")+"|"+r.RemoteAddr)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// door starts a gateway for localhost in front of o.Backend and returns its address and CA.
func door(t *testing.T, o Options) (addr string, ca []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Hosts = []string{"localhost"}
	g, err := Start(ln, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String(), g.CA
}

// get sends GET path to the door at addr as https://localhost:PORT, trusting only ca, with a
// X-Forwarded-For that the caller wrote itself.
func get(t *testing.T, addr string, ca []byte, path string) (int, string, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	_, port, _ := net.SplitHostPort(addr)
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext:     (&net.Dialer{}).DialContext,
	}}
	req, err := http.NewRequest(http.MethodGet, "https://localhost:"+port+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// The door serves the public name with a certificate of its own CA, and passes the request to a
// backend it verified, from its source address, with the Host the caller used and the caller's
// address appended to the X-Forwarded-For the caller wrote.
func TestTheDoorReencryptsKeepingTheHostAndAppendingTheCallersAddress(t *testing.T) {
	url, caFile := backend(t, "127.0.0.1")
	addr, ca := door(t, Options{Backend: url, BackendCAFile: caFile, Source: "127.0.0.2"})
	status, body, err := get(t, addr, ca, "/oauth2/token")
	if err != nil || status != http.StatusOK {
		t.Fatalf("through the door: %d %q %v", status, body, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	host, xff, remote := splitEcho(t, body)
	if host != "localhost:"+port {
		t.Errorf("the backend got Host %q, want the door's localhost:%s", host, port)
	}
	if xff != "203.0.113.7, 127.0.0.1" {
		t.Errorf("the backend got X-Forwarded-For %q, want the caller's own hop and then its address", xff)
	}
	if !strings.HasPrefix(remote, "127.0.0.2:") {
		t.Errorf("the backend got the request from %s, want the door's source 127.0.0.2", remote)
	}

	// A caller that does not trust the door's CA (here: the backend's) fails its handshake.
	backendCA, _ := os.ReadFile(caFile)
	var unknown x509.UnknownAuthorityError
	if _, _, err := get(t, addr, backendCA, "/oauth2/token"); !errors.As(err, &unknown) {
		t.Errorf("a caller trusting another CA: %v, want an unknown authority", err)
	}
}

// The door routes the paths that the chart's HTTPRoute routes, each exactly, and nothing else:
// not /refusals, which takes a Kubernetes bearer token, nor the probes.
func TestTheDoorRoutesOnlyThePublicPaths(t *testing.T) {
	url, caFile := backend(t, "127.0.0.1")
	addr, ca := door(t, Options{Backend: url, BackendCAFile: caFile})
	for path, want := range map[string]int{
		"/.well-known/jwks.json": http.StatusOK, "/.well-known/oauth-authorization-server": http.StatusOK,
		"/refusals": http.StatusNotFound, "/readyz": http.StatusNotFound, "/oauth2/token/x": http.StatusNotFound, "/": http.StatusNotFound,
	} {
		if status, body, err := get(t, addr, ca, path); err != nil || status != want {
			t.Errorf("%s through the door: %d %q %v, want %d", path, status, body, err, want)
		}
	}
}

// A backend whose certificate another CA signed, or that names another host, is refused, as a
// BackendTLSPolicy refuses it: the caller gets 502 and the request never reaches it.
func TestTheDoorRefusesABackendItCannotVerify(t *testing.T) {
	url, _ := backend(t, "127.0.0.1")
	_, otherCA := backend(t, "127.0.0.1")
	misnamed, misnamedCA := backend(t, "m2m-token-server.m2m-system.svc")
	for name, o := range map[string]Options{
		"another CA":   {Backend: url, BackendCAFile: otherCA},
		"another name": {Backend: misnamed, BackendCAFile: misnamedCA},
	} {
		addr, ca := door(t, o)
		if status, body, err := get(t, addr, ca, "/oauth2/token"); err != nil || status != http.StatusBadGateway {
			t.Errorf("a backend with %s: %d %q %v, want 502", name, status, body, err)
		}
	}
}

func TestTheDoorRefusesABackendItWouldNotEncryptTo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Start(ln, Options{Hosts: []string{"localhost"}, Backend: "http://127.0.0.1:8080"}); err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("an http backend: %v, want an error that asks for https", err)
	}
}

func splitEcho(t *testing.T, body string) (host, xff, remote string) {
	t.Helper()
	parts := strings.Split(body, "|")
	if len(parts) != 3 {
		t.Fatalf("the backend's echo %q", body)
	}
	return parts[0], parts[1], parts[2]
}
