package m2mauth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
