package m2mauth

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/servingcert"
)

// A server whose certificate a CA in the file signs is trusted; when the file changes (a CA
// rotation reaching the mounted Secret), the next handshake uses the new file, with no new client.
func TestTheCAFileIsTrustedAndFollowedAcrossChanges(t *testing.T) {
	now := time.Now()
	caA, _ := servingcert.NewCA(now, time.Hour)
	caB, _ := servingcert.NewCA(now, time.Hour)
	leaf, err := servingcert.Issue(caA, []string{"127.0.0.1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()

	path := filepath.Join(t.TempDir(), "ca.crt")
	write := func(pem []byte) {
		// A new file with a later time, as the kubelet's symlink swap gives.
		if err := os.WriteFile(path+".new", pem, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Duration(len(pem)) * time.Millisecond)
		_ = os.Chtimes(path+".new", later, later)
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	get := func(hc *http.Client) error {
		resp, err := hc.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		hc.CloseIdleConnections() // each call a new handshake
		return err
	}
	write(caB.CertPEM)
	hc := withCAFile(newHTTPClient(5*time.Second), path, false)
	if err := get(hc); err == nil {
		t.Fatal("a server of a CA outside the file was trusted")
	}
	write(servingcert.BundleOf(caB.CertPEM, caA.CertPEM))
	if err := get(hc); err != nil {
		t.Fatalf("after the file gained the server's CA: %v", err)
	}
	write(caB.CertPEM)
	if err := get(hc); err == nil {
		t.Fatal("the CA removed from the file is still trusted")
	}

	// A certificate for another host is refused even with its CA trusted.
	other, _ := servingcert.Issue(caA, []string{"m2m.example.com"}, now, time.Hour)
	otherPair, _ := tls.X509KeyPair(other.CertPEM, other.KeyPEM)
	otherSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	otherSrv.TLS = &tls.Config{Certificates: []tls.Certificate{otherPair}}
	otherSrv.StartTLS()
	defer otherSrv.Close()
	write(caA.CertPEM)
	if resp, err := hc.Get(otherSrv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("a certificate for another host was accepted")
	}

	// An optional file that is missing trusts the system's roots alone; a required one fails.
	if err := get(withCAFile(newHTTPClient(5*time.Second), filepath.Join(t.TempDir(), "none"), true)); err == nil {
		t.Fatal("a test CA was trusted without the file")
	}
	if err := get(withCAFile(newHTTPClient(5*time.Second), filepath.Join(t.TempDir(), "none"), false)); err == nil {
		t.Fatal("a missing required file was not an error")
	}
}

// Through an HTTPS_PROXY, the transport makes the TLS connection itself: the mounted CA is
// trusted there too, by host name, and a server it did not sign is refused.
func TestTheCAFileIsTrustedThroughAProxy(t *testing.T) {
	now := time.Now()
	ca, _ := servingcert.NewCA(now, time.Hour)
	other, _ := servingcert.NewCA(now, time.Hour)
	leaf, _ := servingcert.Issue(ca, []string{"localhost"}, now, time.Hour)
	pair, _ := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	var tunnels atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		upstream, err := net.Dial("tcp", srv.Listener.Addr().String()) // localhost:port
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		tunnels.Add(1)
		// Hijack first and answer on the raw connection, and read the client's bytes through
		// the server's buffered reader: a client may send its TLS hello right after CONNECT,
		// and bytes already buffered there would be lost to a copy from the bare connection.
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			conn.Close()
			upstream.Close()
			return
		}
		go func() { _, _ = io.Copy(upstream, brw.Reader); upstream.Close() }()
		_, _ = io.Copy(conn, upstream)
		conn.Close()
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)

	get := func(caPEM []byte) error {
		path := filepath.Join(t.TempDir(), "ca.crt")
		if err := os.WriteFile(path, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		hc := withCAFile(newHTTPClient(5*time.Second), path, false)
		hc.Transport.(*http.Transport).Proxy = http.ProxyURL(proxyURL)
		resp, err := hc.Get("https://localhost:" + port)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(ca.CertPEM); err != nil {
		t.Fatalf("through the proxy, with the server's CA mounted: %v", err)
	}
	if err := get(other.CertPEM); err == nil {
		t.Fatal("through the proxy, a server of a CA outside the file was trusted")
	}
	if tunnels.Load() != 2 {
		t.Fatalf("%d requests went through the proxy, want 2", tunnels.Load())
	}
}
