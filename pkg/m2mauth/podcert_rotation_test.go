package m2mauth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// When the kubelet rotates the pod certificate while a request is in flight, on HTTP/1.1 and on
// HTTP/2 (one connection carries every request), no request is refused: the one in flight ends
// on its connection with the token of its certificate, and every later one goes over a new
// connection that presents the new certificate with a token bound to it.
func TestARotationWithARequestInFlightRefusesNoRequest(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			jwks, _, ca, src, bundle, _, second := rotatingPod(t)
			inFlight, release := make(chan struct{}), make(chan struct{})
			protected := Middleware(newTestVerifier(t, jwks))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					close(inFlight)
					<-release
				}
			}))
			srv := httptest.NewUnstartedServer(protected)
			srv.EnableHTTP2 = h2
			srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Server(t)}}
			srv.StartTLS()
			defer srv.Close()
			hc := &http.Client{Transport: NewTransport(src, &http.Transport{ForceAttemptHTTP2: h2, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}})}
			get := func(path string) int {
				resp, err := hc.Get(srv.URL + path)
				if err != nil {
					t.Error(err)
					return 0
				}
				_ = resp.Body.Close()
				return resp.StatusCode
			}
			if got := get("/"); got != http.StatusOK {
				t.Fatalf("before the rotation: %d", got)
			}
			slow := make(chan int)
			go func() { slow <- get("/slow") }()
			<-inFlight
			if err := volume.Project(filepath.Dir(bundle), map[string][]byte{"credentialbundle.pem": second.Bundle(t)}); err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				if got := get("/"); got != http.StatusOK {
					t.Errorf("request %d after the rotation: %d", i+1, got)
				}
			}
			close(release)
			if got := <-slow; got != http.StatusOK {
				t.Errorf("the request in flight during the rotation: %d", got)
			}
		})
	}
}
