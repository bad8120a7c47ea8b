package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

// mtlsTokenServer runs a second token server over TLS with --client-ca-file, with the manager's
// signing keys, and returns its issuer URL and the PEM of the CA of its serving certificate.
func mtlsTokenServer(t *testing.T, clientCA *podcert.CA) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	serving := podcert.NewCA(t)
	certFile, keyFile := serving.WriteServer(t, dir)
	caFile := filepath.Join(dir, "pod-client-ca.crt")
	if err := os.WriteFile(caFile, clientCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	testenv.RunTokenServer(t, tokenServerConfig, ln, "--issuer-url="+url, "--tls-cert-file="+certFile, "--tls-key-file="+keyFile,
		"--client-ca-file="+caFile, "--signing-key-secret="+signingkeys.DefaultSecret.String(), "--metrics-bind-address=0")
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serving.Pool()}}}
	testenv.Eventually(t, wait, func() error {
		resp, err := trusting.Get(url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	return url, serving.PEM
}

// Certificate-bound tokens end to end, against the real manager and a real token server with
// --client-ca-file: a pod whose ServiceAccount the client lists gets, with pkg/m2mauth and the
// credential bundle the kubelet writes, a token bound to its certificate over mutual TLS, and a
// resource server using the library accepts it from that pod. A holder of the token without the
// pod's key (another pod's certificate, or none) is refused, and another namespace's pod of the
// same ServiceAccount name gets no token for the client.
func TestACertificateBoundTokenWorksOnlyForThePodThatHoldsTheKey(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clientCA := podcert.NewCA(t)
	url, servingCA := mtlsTokenServer(t, clientCA)
	ns := namespace(t)
	obj := billingClient(ns, "pod-bound")
	obj.Spec.Authentication = m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), PodCertificates: &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: []string{"worker"}}}
	s := readyClient(t, obj)
	clientID := string(s.Data[m2mv1alpha1.SecretKeyClientID])

	pod := clientCA.Issue(t, ns, "worker")
	root := t.TempDir()
	dir, certs := filepath.Join(root, "secret"), filepath.Join(root, "pod-certificate")
	if err := volume.Project(dir, map[string][]byte{"client_id": []byte(clientID), "token_url": []byte(url + "/oauth2/token"), "ca.crt": servingCA}); err != nil {
		t.Fatal(err)
	}
	if err := volume.Project(certs, map[string][]byte{"credentialbundle.pem": pod.Bundle(t)}); err != nil {
		t.Fatal(err)
	}
	ts, err := m2mauth.NewTokenSource(ctx, dir, m2mauth.PodCertificate(filepath.Join(certs, "credentialbundle.pem")))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("a token over mutual TLS: %v", err)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, claims); err != nil {
		t.Fatal(err)
	}
	if cnf, _ := claims["cnf"].(map[string]any); tok.Type() != "Bearer" || cnf["x5t#S256"] != pod.Thumbprint() {
		t.Fatalf("token type %q, cnf %v; want Bearer bound to %s", tok.Type(), claims["cnf"], pod.Thumbprint())
	}

	caFile := filepath.Join(root, "serving-ca.crt")
	if err := os.WriteFile(caFile, servingCA, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := m2mauth.NewVerifier(ctx, url, m2mauth.WithAudiences("https://payments.example.com"), m2mauth.WithCAFile(caFile))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	apiCA := podcert.NewCA(t)
	api := httptest.NewUnstartedServer(m2mauth.Middleware(v)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	api.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{apiCA.Server(t)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCA.Pool()}
	api.StartTLS()
	defer api.Close()

	hc := &http.Client{Transport: m2mauth.NewTransport(ts, &http.Transport{TLSClientConfig: &tls.Config{RootCAs: apiCA.Pool()}})}
	resp, err := hc.Get(api.URL + "/invoices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the resource server answered %d to the bound token from the pod", resp.StatusCode)
	}

	// The attacker holds the token (from a log, a proxy, a dump) but not the pod's key: it
	// presents a certificate of its own, from the same CA, or none.
	thief := clientCA.Issue(t, ns+"-x", "worker")
	for name, cert := range map[string]*tls.Certificate{"its own pod certificate": &thief.TLS, "no certificate": nil} {
		cfg := &tls.Config{RootCAs: apiCA.Pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+"/invoices", nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the stolen token with %s got %d, want 401", name, resp.StatusCode)
		}
	}

	// The thief's certificate names worker of another namespace: no token for the client.
	thiefTransport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pemPool(t, servingCA), Certificates: []tls.Certificate{thief.TLS}}}
	cc := clientcredentials.Config{ClientID: clientID, TokenURL: url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}
	if _, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: thiefTransport})); !containsError(err, "invalid_client") {
		t.Fatalf("another namespace's worker asked for the client's token: %v, want invalid_client", err)
	}
}

// pemPool holds the certificates of a PEM bundle.
func pemPool(t *testing.T, bundle []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(bundle) {
		t.Fatal("no certificate in the bundle")
	}
	return p
}
