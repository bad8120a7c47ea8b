package m2mauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
	"golang.org/x/oauth2"
)

// certClaims are goodClaims bound to leaf's certificate.
func certClaims(iss string, leaf *podcert.Leaf) map[string]any {
	return with(goodClaims(iss), "cnf", map[string]any{"x5t#S256": leaf.Thumbprint()})
}

// mtlsResource serves h over TLS, verifying the client certificates given against ca.
func mtlsResource(t *testing.T, ca *podcert.CA, h http.Handler, clientAuth tls.ClientAuthType) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: clientAuth, ClientCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Server(t)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// mtlsGet sends GET url with authorization, presenting cert when it is not nil, and the
// headers extra (name, value, ...).
func mtlsGet(t *testing.T, ca *podcert.CA, url, authorization string, cert *tls.Certificate, extra ...string) *http.Response {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", authorization)
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

func TestACertificateBoundTokenIsAcceptedOnlyWithTheVerifiedClientCertificateItIsBoundTo(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	jwks := newJWKSServer(t, ec)
	v := newTestVerifier(t, jwks)
	ca := podcert.NewCA(t)
	pod, other := ca.Issue(t, "team-a", "worker"), ca.Issue(t, "team-a", "worker")
	token := mint(t, ec, certClaims(jwks.URL, pod), nil)
	h := Middleware(v)(reached)
	verified := mtlsResource(t, ca, h, tls.VerifyClientCertIfGiven)
	unverified := mtlsResource(t, ca, h, tls.RequireAnyClientCert)
	for sentence, tc := range map[string]struct {
		url, authorization string
		cert               *tls.Certificate
		status             int
		extra              []string
	}{
		"the bound certificate forwarded in headers, none presented, is refused": {verified.URL, "Bearer " + token, nil, 401,
			[]string{"X-Forwarded-Client-Cert", "Hash=" + pod.Thumbprint(), "Client-Cert", ":" + base64.StdEncoding.EncodeToString(pod.Cert.Raw) + ":"}},
		"the bound certificate, verified, is accepted":               {verified.URL, "Bearer " + token, &pod.TLS, 200, nil},
		"another certificate of the same CA is refused":              {verified.URL, "Bearer " + token, &other.TLS, 401, nil},
		"no certificate is refused":                                  {verified.URL, "Bearer " + token, nil, 401, nil},
		"the bound certificate that the server did not verify fails": {unverified.URL, "Bearer " + token, &pod.TLS, 401, nil},
		"the DPoP scheme is refused":                                 {verified.URL, "DPoP " + token, &pod.TLS, 401, nil},
	} {
		t.Run(sentence, func(t *testing.T) {
			if resp := mtlsGet(t, ca, tc.url, tc.authorization, tc.cert, tc.extra...); resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if w := serve(h, "GET", "http://example.com/users", "Bearer "+token, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("without TLS: %d", w.Code)
	}
}

// A certificate-bound token sent in the DPoP scheme, with a valid proof, over the bound
// certificate, is refused as bound to no DPoP key.
func TestACertificateBoundTokenInTheDPoPSchemeIsRefusedAsBoundToNoKey(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	jwks := newJWKSServer(t, ec)
	v := newTestVerifier(t, jwks)
	pod := podcert.NewCA(t).Issue(t, "team-a", "worker")
	token := mint(t, ec, certClaims(jwks.URL, pod), nil)
	r := httptest.NewRequest(http.MethodGet, "https://api.example.com/users", nil)
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{pod.Cert}}}
	r.Header.Set("Authorization", "DPoP "+token)
	r.Header.Set("DPoP", proofFor(t, newDPoPKey(t), http.MethodGet, "https://api.example.com/users", dpop.ProofOptions{AccessToken: token}))
	if _, err := v.AuthenticateRequest(r); !errors.Is(err, ErrDPoPBound) {
		t.Fatalf("%v, want ErrDPoPBound", err)
	}
	r.Header.Set("Authorization", "Bearer "+token)
	r.Header.Del("DPoP")
	if _, err := v.AuthenticateRequest(r); err != nil {
		t.Fatalf("the same request as Bearer: %v", err)
	}
}

func TestAuthenticateRefusesACertificateBoundTokenWithErrCertificateBound(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	jwks := newJWKSServer(t, ec)
	v := newTestVerifier(t, jwks)
	token := mint(t, ec, certClaims(jwks.URL, podcert.NewCA(t).Issue(t, "team-a", "worker")), nil)
	if _, err := v.Authenticate(context.Background(), token); !errors.Is(err, ErrCertificateBound) {
		t.Fatalf("Authenticate of a certificate-bound token: %v, want ErrCertificateBound", err)
	}
}

// podTokenServer is a token endpoint over TLS that verifies client certificates against ca
// and, for a request with one, client_id and no secret, issues a token bound to it.
type podTokenServer struct {
	*httptest.Server
	asked atomic.Int64
}

func newPodTokenServer(t *testing.T, ca *podcert.CA, signer *signingkeys.Key, issuer string) *podTokenServer {
	t.Helper()
	s := &podTokenServer{}
	s.Server = mtlsResource(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.asked.Add(1)
		_ = r.ParseForm()
		_, _, basic := r.BasicAuth()
		if len(r.TLS.VerifiedChains) == 0 || r.PostForm.Get("client_id") != "m2m-a" || r.PostForm.Has("client_secret") || basic {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		leaf := &podcert.Leaf{Cert: r.TLS.VerifiedChains[0][0]}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": mint(t, signer, certClaims(issuer, leaf), nil), "token_type": "Bearer", "expires_in": 3600})
	}), tls.VerifyClientCertIfGiven)
	return s
}

// mountPod writes the client's Secret (client_id, token_url, ca.crt) and the pod's credential
// bundle as the kubelet does, and returns the Secret's directory and the bundle's path.
func mountPod(t *testing.T, ca *podcert.CA, tokenURL string, leaf *podcert.Leaf) (string, string) {
	t.Helper()
	root := t.TempDir()
	secret, certs := filepath.Join(root, "secret"), filepath.Join(root, "pod-certificate")
	if err := volume.Project(secret, map[string][]byte{"client_id": []byte("m2m-a"), "token_url": []byte(tokenURL), "ca.crt": ca.PEM}); err != nil {
		t.Fatal(err)
	}
	if err := volume.Project(certs, map[string][]byte{"credentialbundle.pem": leaf.Bundle(t)}); err != nil {
		t.Fatal(err)
	}
	return secret, filepath.Join(certs, "credentialbundle.pem")
}

// The pod certificate authenticates the token request and is presented to the resource server;
// when the kubelet rotates it, the next request gets a token bound to the new one, before the
// old token expires, and presents the new certificate.
func TestAPodCertificateSourceFollowsTheRotatedBundleAndTheTransportPresentsIt(t *testing.T) {
	jwks, ts, ca, src, bundle, first, second := rotatingPod(t)
	var boundTo atomic.Value
	var received atomic.Int64
	protected := Middleware(newTestVerifier(t, jwks))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := ClaimsFromContext(r.Context())
		boundTo.Store(c.Custom["cnf"].(map[string]any)["x5t#S256"])
	}))
	resource := mtlsResource(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		protected.ServeHTTP(w, r)
	}), tls.VerifyClientCertIfGiven)
	hc := &http.Client{Transport: NewTransport(src, &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}})}
	call := func(want *podcert.Leaf) {
		t.Helper()
		resp, err := hc.Get(resource.URL)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || boundTo.Load() != want.Thumbprint() {
			t.Fatalf("status %d, token bound to %v, want %s", resp.StatusCode, boundTo.Load(), want.Thumbprint())
		}
	}
	call(first)
	call(first)
	if n := ts.asked.Load(); n != 1 {
		t.Fatalf("%d token requests for one certificate, want 1", n)
	}
	if err := volume.Project(filepath.Dir(bundle), map[string][]byte{"credentialbundle.pem": second.Bundle(t)}); err != nil {
		t.Fatal(err)
	}
	call(second)
	if n := ts.asked.Load(); n != 2 {
		t.Fatalf("%d token requests after the rotation, want 2", n)
	}
	// No request was refused and sent again: the token was replaced before it was sent.
	if n := received.Load(); n != 3 {
		t.Fatalf("the resource server received %d requests for 3 calls", n)
	}
}

func TestAPodCertificateSourceRefusesABundleItCannotUseAndOptionsThatDoNotGoWithIt(t *testing.T) {
	ca := podcert.NewCA(t)
	leaf := ca.Issue(t, "team-a", "worker")
	dir, bundle := mountPod(t, ca, "https://127.0.0.1:1/token", leaf)
	ctx := context.Background()
	if _, err := NewTokenSource(ctx, dir, PodCertificate(bundle), DPoP()); err == nil || !strings.Contains(err.Error(), "DPoP") {
		t.Fatalf("with DPoP: %v", err)
	}
	if _, err := NewServiceAccountTokenSource(ctx, dir, bundle, PodCertificate(bundle)); err == nil {
		t.Fatal("with a ServiceAccount token: no error")
	}
	// certs returns the certificate blocks of a bundle, key returns its key block.
	certs := func(b []byte) []byte { return b[strings.Index(string(b), "-----BEGIN CERTIFICATE-----"):] }
	key := func(b []byte) []byte { return b[:strings.Index(string(b), "-----BEGIN CERTIFICATE-----")] }
	other := ca.Issue(t, "team-a", "worker").Bundle(t)
	for name, content := range map[string][]byte{
		"a certificate before the key": append(certs(leaf.Bundle(t)), key(leaf.Bundle(t))...),
		"a key that is not the leaf's": append(key(other), certs(leaf.Bundle(t))...),
		"no certificate":               key(other),
	} {
		path := filepath.Join(t.TempDir(), "bundle.pem")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewTokenSource(ctx, dir, PodCertificate(path)); err == nil {
			t.Errorf("%s: the source was made", name)
		}
	}
}

// ClientCertificate gives a transport of the caller's the certificate a PodCertificate source's
// tokens are bound to, as the file holds it now; other sources have none.
func TestClientCertificateGivesThePodCertificateOfItsSourceOnly(t *testing.T) {
	ca := podcert.NewCA(t)
	first, second := ca.Issue(t, "team-a", "worker"), ca.Issue(t, "team-a", "worker")
	dir, bundle := mountPod(t, ca, "https://127.0.0.1:1/token", first)
	src, err := NewTokenSource(context.Background(), dir, PodCertificate(bundle))
	if err != nil {
		t.Fatal(err)
	}
	get, ok := ClientCertificate(src)
	if !ok {
		t.Fatal("no certificate for a PodCertificate source")
	}
	for _, want := range []*podcert.Leaf{first, second} {
		if want == second {
			if err := volume.Project(filepath.Dir(bundle), map[string][]byte{"credentialbundle.pem": second.Bundle(t)}); err != nil {
				t.Fatal(err)
			}
		}
		cert, err := get(&tls.CertificateRequestInfo{})
		if err != nil || cert.Leaf == nil || !cert.Leaf.Equal(want.Cert) {
			t.Fatalf("the certificate given is not the bundle's: %v", err)
		}
	}
	if _, ok := ClientCertificate(dpopClientSource(t, "https://127.0.0.1:1/token")); ok {
		t.Fatal("a certificate for a source without one")
	}
}

// rotatingPod is a pod of team-a/worker whose kubelet bundle holds first, with a token source
// on it against a token server that trusts ca, and second, the certificate of its next
// rotation; jwks serves the keys of the token server ts.
func rotatingPod(t *testing.T) (jwks *jwksServer, ts *podTokenServer, ca *podcert.CA, src oauth2.TokenSource, bundle string, first, second *podcert.Leaf) {
	t.Helper()
	ec := genKey(t, signingkeys.ES256)
	jwks = newJWKSServer(t, ec)
	ca = podcert.NewCA(t)
	ts = newPodTokenServer(t, ca, ec, jwks.URL)
	first, second = ca.Issue(t, "team-a", "worker"), ca.Issue(t, "team-a", "worker")
	dir, bundle := mountPod(t, ca, ts.URL+"/token", first)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	src, err := NewTokenSource(ctx, dir, PodCertificate(bundle))
	if err != nil {
		t.Fatal(err)
	}
	return jwks, ts, ca, src, bundle, first, second
}
