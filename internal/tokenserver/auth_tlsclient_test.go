package tokenserver

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/dpop"
	"github.com/m2m-dev/m2m-operator/test/support/podcert"
)

const (
	podID       = "m2m-pod"
	podNS       = "team-a"
	podSA       = "worker"
	disabledPod = "m2m-pod-disabled"
)

// mtlsFixture is a token server over TLS that verifies client certificates against ca, as
// --client-ca-file makes it, with clients podID and disabledPod (team-a, allowing the
// ServiceAccount worker) and goodID (a secret, no pod certificates).
type mtlsFixture struct {
	srv    *httptest.Server
	ca     *podcert.CA
	caFile string
	key    *signingkeys.Key
}

func podClient(id string) *m2mv1alpha1.M2MClient {
	c := testClient(id, goodSecret)
	c.Namespace = podNS
	c.Spec.Authentication.PodCertificates = &m2mv1alpha1.PodCertificatePolicy{ServiceAccounts: []string{podSA, "auditor"}}
	return seal(c)
}

func mtlsServer(t *testing.T) *mtlsFixture {
	t.Helper()
	return newMTLSServer(t, clocktesting.NewFakeClock(t0))
}

// newMTLSServer is mtlsServer on clk.
func newMTLSServer(t testing.TB, clk clock.PassiveClock) *mtlsFixture {
	t.Helper()
	f := mtlsServerWaitingForCA(t, clk)
	if err := os.WriteFile(f.caFile, f.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// mtlsServerWaitingForCA is newMTLSServer before its --client-ca-file exists, as it is while
// the optional ConfigMap has not been published: f.caFile is where it will be.
func mtlsServerWaitingForCA(t testing.TB, clk clock.PassiveClock) *mtlsFixture {
	t.Helper()
	ca := podcert.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	key, keys := staticKeys(t, signingkeys.ES256)
	disabled := podClient(disabledPod)
	disabled.Spec.Disabled = true
	s, err := New(Config{
		IssuerURL: testIssuer, Keys: keys, Clock: clk, ClientCertificates: true,
		Clients: mapClients{podID: podClient(podID), disabledPod: seal(disabled), goodID: testClient(goodID, goodSecret)},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	base := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.Server(t)}}
	base.GetConfigForClient = (&clientCAFile{path: caFile}).configFor(base)
	srv.TLS = base
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &mtlsFixture{srv: srv, ca: ca, caFile: caFile, key: key}
}

// post sends form to path with cert (none when nil) and returns the status and the JSON answer.
func (f *mtlsFixture) post(t *testing.T, path string, cert *tls.Certificate, header http.Header, form ...string) (int, map[string]any, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.ca.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(formBody(form...)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%d %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out, nil
}

func (f *mtlsFixture) token(t *testing.T, cert *tls.Certificate, id string) (int, map[string]any) {
	t.Helper()
	status, out, err := f.post(t, "/oauth2/token", cert, nil, "grant_type", "client_credentials", "client_id", id)
	if err != nil {
		t.Fatal(err)
	}
	return status, out
}

func (f *mtlsFixture) claims(t *testing.T, token string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return f.key.Signer().Public(), nil }, jwt.WithTimeFunc(func() time.Time { return t0 })); err != nil {
		t.Fatalf("the token does not verify: %v", err)
	}
	return claims
}

func TestAPodCertificateOfAListedServiceAccountGetsABearerTokenBoundToTheCertificate(t *testing.T) {
	f := mtlsServer(t)
	leaf := f.ca.Issue(t, podNS, podSA)
	status, out := f.token(t, &leaf.TLS, podID)
	if status != http.StatusOK || out["token_type"] != "Bearer" {
		t.Fatalf("%d %v", status, out)
	}
	cnf, _ := f.claims(t, out["access_token"].(string))["cnf"].(map[string]any)
	if len(cnf) != 1 || cnf["x5t#S256"] != leaf.Thumbprint() {
		t.Fatalf("cnf %v, want only x5t#S256 %s", cnf, leaf.Thumbprint())
	}
}

// Every refusal of a certificate, whatever its cause, is the answer to an unknown client, so
// that a caller learns neither which clients exist nor what they allow.
func TestEveryRefusedPodCertificateGetsTheAnswerOfAnUnknownClient(t *testing.T) {
	f := mtlsServer(t)
	ca := f.ca
	uris := func(raw ...string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			for _, r := range raw {
				u, err := url.Parse(r)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
		}
	}
	listed := podcert.Identity(podNS, podSA)
	cases := map[string]struct {
		leaf *podcert.Leaf
		id   string
	}{
		"an unknown client":                          {ca.Issue(t, podNS, podSA), "m2m-nobody"},
		"a ServiceAccount the client does not list":  {ca.Issue(t, podNS, "intruder"), podID},
		"the listed name in another namespace":       {ca.Issue(t, "team-b", podSA), podID},
		"a disabled client":                          {ca.Issue(t, podNS, podSA), disabledPod},
		"a client without pod certificates":          {ca.Issue(t, "ns", podSA), goodID},
		"two URI SANs":                               {ca.IssueWith(t, uris(listed, podcert.Identity(podNS, "auditor"))), podID},
		"a DNS SAN besides the URI":                  {ca.IssueWith(t, func(c *x509.Certificate) { uris(listed)(c); c.DNSNames = []string{"worker.team-a"} }), podID},
		"an IP SAN besides the URI":                  {ca.IssueWith(t, func(c *x509.Certificate) { uris(listed)(c); c.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }), podID},
		"no SAN, the identity in the subject":        {ca.IssueWith(t, func(c *x509.Certificate) { c.Subject.CommonName = listed }), podID},
		"another trust domain":                       {ca.IssueWith(t, uris("spiffe://m2m.example/ns/team-a/sa/worker")), podID},
		"another scheme":                             {ca.IssueWith(t, uris("https://m2m.dev/ns/team-a/sa/worker")), podID},
		"a port":                                     {ca.IssueWith(t, uris("spiffe://m2m.dev:443/ns/team-a/sa/worker")), podID},
		"user info":                                  {ca.IssueWith(t, uris("spiffe://team-b@m2m.dev/ns/team-a/sa/worker")), podID},
		"a query":                                    {ca.IssueWith(t, uris(listed+"?sa=admin")), podID},
		"a fragment":                                 {ca.IssueWith(t, uris(listed+"#x")), podID},
		"an extra path segment":                      {ca.IssueWith(t, uris(listed+"/extra")), podID},
		"a trailing slash":                           {ca.IssueWith(t, uris(listed+"/")), podID},
		"an escaped slash in the namespace":          {ca.IssueWith(t, uris("spiffe://m2m.dev/ns/team-a%2Fsa/sa/worker")), podID},
		"a dot segment":                              {ca.IssueWith(t, uris("spiffe://m2m.dev/ns/team-b/../team-a/sa/worker")), podID},
		"a namespace that is no DNS label":           {ca.IssueWith(t, uris("spiffe://m2m.dev/ns/Team-A/sa/worker")), podID},
		"a ServiceAccount name that is no subdomain": {ca.IssueWith(t, uris("spiffe://m2m.dev/ns/team-a/sa/Worker")), podID},
		"the upper-case host":                        {ca.IssueWith(t, uris("spiffe://M2M.DEV/ns/team-a/sa/worker")), podID},
		"no client_id":                               {ca.Issue(t, podNS, podSA), ""},
	}
	_, want := f.token(t, nil, "m2m-nobody")
	if want["error"] != ErrInvalidClient {
		t.Fatalf("an unknown client without a certificate: %v", want)
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			status, out := f.token(t, &c.leaf.TLS, c.id)
			if status != http.StatusUnauthorized || out["error"] != want["error"] || out["error_description"] != want["error_description"] || len(out) != len(want) {
				t.Fatalf("%d %v, want 401 %v", status, out, want)
			}
		})
	}
}

// A client certificate is taken only from the handshake: one forwarded in a header, as a proxy
// that terminates TLS would (Envoy's XFCC, RFC 9440), is not read, whoever sends it.
func TestAClientCertificateForwardedInAHeaderIsNotRead(t *testing.T) {
	f := mtlsServer(t)
	victim := f.ca.Issue(t, podNS, podSA)
	pemCert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: victim.Cert.Raw}))
	forged := http.Header{
		"X-Forwarded-Client-Cert": {"Hash=" + victim.Thumbprint() + ";Cert=\"" + url.QueryEscape(pemCert) + "\";URI=" + podcert.Identity(podNS, podSA)},
		"Client-Cert":             {":" + base64.StdEncoding.EncodeToString(victim.Cert.Raw) + ":"},
	}
	status, out, err := f.post(t, "/oauth2/token", nil, forged, "grant_type", "client_credentials", "client_id", podID)
	if err != nil || status != http.StatusUnauthorized || out["error"] != ErrInvalidClient {
		t.Fatalf("%d %v %v", status, out, err)
	}
}

func TestACertificateOfAnotherCAIsRefusedByTheTLSHandshake(t *testing.T) {
	f := mtlsServer(t)
	other := podcert.NewCA(t).Issue(t, podNS, podSA)
	if status, out, err := f.post(t, "/oauth2/token", &other.TLS, nil, "grant_type", "client_credentials", "client_id", podID); err == nil {
		t.Fatalf("a certificate of another CA was taken: %d %v", status, out)
	}
}

// The listener reads --client-ca-file again when it changes: a CA added during a rotation is
// trusted from the next handshake on, without a restart.
func TestTheListenerTrustsTheCAsOfTheClientCAFileAsItIsNow(t *testing.T) {
	f := mtlsServer(t)
	next := podcert.NewCA(t)
	leaf := next.Issue(t, podNS, podSA)
	if _, _, err := f.post(t, "/oauth2/token", &leaf.TLS, nil, "grant_type", "client_credentials", "client_id", podID); err == nil {
		t.Fatal("a certificate of a CA not yet in the file was taken, so the test could not fail")
	}
	if err := os.WriteFile(f.caFile, append(append([]byte{}, f.ca.PEM...), next.PEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, out := f.token(t, &leaf.TLS, podID); status != http.StatusOK {
		t.Fatalf("after the CA was added to the file: %d %v", status, out)
	}
}

// The chart mounts the ConfigMap m2m-pod-client-ca as optional: until the manager publishes it,
// the file is missing. Clients without a certificate are served then, and pod certificates are
// taken from the first handshake after the file appears.
func TestUntilTheClientCAFileExistsClientsWithoutACertificateAreServedAndThenPodCertificatesAreTaken(t *testing.T) {
	f := mtlsServerWaitingForCA(t, clocktesting.NewFakeClock(t0))
	status, out, err := f.post(t, "/oauth2/token", nil, nil, "grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)
	if err != nil || status != http.StatusOK {
		t.Fatalf("a secret client before the CA file exists: %d %v %v", status, out, err)
	}
	leaf := f.ca.Issue(t, podNS, podSA)
	// No certificate is asked for, so none is sent: the request has a client_id alone.
	if status, out, err := f.post(t, "/oauth2/token", &leaf.TLS, nil, "grant_type", "client_credentials", "client_id", podID); err != nil || status != http.StatusUnauthorized || out["error"] != ErrInvalidClient {
		t.Fatalf("a pod certificate before the CA file existed: %d %v %v, want invalid_client", status, out, err)
	}
	if err := os.WriteFile(f.caFile, f.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	status, out = f.token(t, &leaf.TLS, podID)
	if status != http.StatusOK {
		t.Fatalf("after the CA file appeared: %d %v", status, out)
	}
	if cnf, _ := f.claims(t, out["access_token"].(string))["cnf"].(map[string]any); cnf["x5t#S256"] != leaf.Thumbprint() {
		t.Fatalf("cnf %v, want the certificate's x5t#S256", cnf)
	}
}

// A client that authenticates with a secret over a connection with a certificate takes the
// secret path, and its token is not bound.
func TestASecretOverAConnectionWithACertificateGetsAnUnboundToken(t *testing.T) {
	f := mtlsServer(t)
	leaf := f.ca.Issue(t, podNS, podSA)
	status, out, err := f.post(t, "/oauth2/token", &leaf.TLS, nil, "grant_type", "client_credentials", "client_id", goodID, "client_secret", goodSecret)
	if err != nil || status != http.StatusOK {
		t.Fatalf("%d %v %v", status, out, err)
	}
	if cnf := f.claims(t, out["access_token"].(string))["cnf"]; cnf != nil {
		t.Fatalf("cnf %v", cnf)
	}
}

func TestACertificateRequestWithADPoPProofIsRefusedAsInvalidRequest(t *testing.T) {
	f := mtlsServer(t)
	leaf := f.ca.Issue(t, podNS, podSA)
	p := proof(t, proofKey(t), http.MethodPost, issuerTokenURL, dpop.ProofOptions{})
	status, out, err := f.post(t, "/oauth2/token", &leaf.TLS, http.Header{"Dpop": {p}}, "grant_type", "client_credentials", "client_id", podID)
	if err != nil || status != http.StatusBadRequest || out["error"] != ErrInvalidRequest {
		t.Fatalf("%d %v %v", status, out, err)
	}
}

func TestIntrospectionOfACertificateBoundTokenAnswersItsCnfAsABearerToken(t *testing.T) {
	f := mtlsServer(t)
	leaf := f.ca.Issue(t, podNS, podSA)
	_, out := f.token(t, &leaf.TLS, podID)
	status, answer, err := f.post(t, "/oauth2/introspect", nil, nil, "client_id", goodID, "client_secret", goodSecret, "token", out["access_token"].(string))
	cnf, _ := answer["cnf"].(map[string]any)
	if err != nil || status != http.StatusOK || answer["active"] != true || answer["token_type"] != "Bearer" || cnf["x5t#S256"] != leaf.Thumbprint() {
		t.Fatalf("%d %v %v", status, answer, err)
	}
}

func TestTheMetadataOffersCertificateBoundTokensOnlyWithClientCertificates(t *testing.T) {
	for _, on := range []bool{false, true} {
		_, keys := staticKeys(t, signingkeys.ES256)
		s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{}, Keys: keys, ClientCertificates: on})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-authorization-server", nil))
		var md map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &md); err != nil {
			t.Fatal(err)
		}
		methods, _ := json.Marshal(md["token_endpoint_auth_methods_supported"])
		offered := strings.Contains(string(methods), `"tls_client_auth"`)
		if offered != on || (md["tls_client_certificate_bound_access_tokens"] == true) != on {
			t.Fatalf("with client certificates %v: methods %s, bound tokens %v", on, methods, md["tls_client_certificate_bound_access_tokens"])
		}
	}
}

// The identity is read only in the signer's exact form, names included: a namespace is a DNS
// label and a ServiceAccount name a DNS subdomain, as the API server names them.
func TestAPodIdentityIsReadOnlyWithNamesTheAPIServerGives(t *testing.T) {
	ca := podcert.NewCA(t)
	for uri, want := range map[string]bool{
		"spiffe://m2m.dev/ns/team-a/sa/worker":                          true,
		"spiffe://m2m.dev/ns/team-a/sa/worker.v2":                       true,
		"spiffe://m2m.dev/ns/team.a/sa/worker":                          false,
		"spiffe://m2m.dev/ns/" + strings.Repeat("a", 64) + "/sa/worker": false,
		"spiffe://m2m.dev/ns/team-a/sa/worker_1":                        false,
		"spiffe://m2m.dev/ns/team-a/sa/-worker":                         false,
		"spiffe://m2m.dev/ns//sa/worker":                                false,
		"spiffe://m2m.dev/ns/team-a/sa/":                                false,
	} {
		u, _ := url.Parse(uri)
		leaf := ca.IssueWith(t, func(c *x509.Certificate) { c.URIs = []*url.URL{u} })
		if _, _, ok := podIdentity(leaf.Cert); ok != want {
			t.Errorf("%s: read %v, want %v", uri, ok, want)
		}
	}
}

// A request with a certificate and no client_id is refused for its missing client_id before
// any client is looked for: several clients may allow one pod.
func TestACertificateWithoutClientIDIsRefusedForTheMissingCredential(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{"": podClient(podID)}, Keys: keys, ClientCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := podcert.NewCA(t).Issue(t, podNS, podSA)
	_, _, bad := s.authenticate(t.Context(), &tokenRequest{peerCertificate: leaf.Cert})
	wantReason(t, bad, "no_credentials")
}

// A client certificate is verified at the handshake only: the server closes each connection
// that carried one after its answer, so that a certificate that expired since, or one of a CA
// since replaced, cannot keep getting tokens over a connection kept alive.
func TestAConnectionWithAClientCertificateServesOneTokenRequest(t *testing.T) {
	f := mtlsServer(t)
	leaf := f.ca.Issue(t, podNS, podSA)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool(), Certificates: []tls.Certificate{leaf.TLS}}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/oauth2/token", strings.NewReader(formBody("grant_type", "client_credentials", "client_id", podID)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Fatalf("%d, connection kept: %t; want 200 and the connection closed", resp.StatusCode, !resp.Close)
	}
}

// A token bound to a certificate expires no later than the certificate.
func TestACertificateBoundTokenExpiresNoLaterThanItsCertificate(t *testing.T) {
	_, keys := staticKeys(t, signingkeys.ES256)
	s, err := New(Config{IssuerURL: testIssuer, Keys: keys, Clock: clocktesting.NewFakeClock(t0), Clients: mapClients{}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCachedClient(podClient(podID)) // tokenTTL 15 minutes
	until := t0.Add(5 * time.Minute)
	_, ttl, bad := s.sign(c, nil, []string{testIssuer}, &confirmation{X5T: "thumbprint", until: until})
	if bad != nil || ttl != 5*time.Minute {
		t.Fatalf("a certificate with 5 minutes left: a token for %s (%v)", ttl, bad)
	}
	if _, ttl, _ := s.sign(c, nil, []string{testIssuer}, &confirmation{X5T: "thumbprint", until: t0.Add(time.Hour)}); ttl != 15*time.Minute {
		t.Fatalf("a certificate with an hour left: a token for %s, want the client's 15 minutes", ttl)
	}
}
