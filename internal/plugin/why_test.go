package plugin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

var whyKey = types.NamespacedName{Namespace: "team-a", Name: "reports"}

// clusterWithTokenURL is a fake cluster whose install publishes tokenURL as its token server's.
func clusterWithTokenURL(tokenURL string) client.Client {
	return fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(installConfigMap(tokenURL, "")).Build()
}

// installConfigMap is the manager's ConfigMap in m2m-system, naming tokenURL (and ca when given).
func installConfigMap(tokenURL, ca string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "m2m-system", Name: m2mv1alpha1.TokenServerConfigMap},
		Data: map[string]string{m2mv1alpha1.SecretKeyTokenURL: tokenURL, m2mv1alpha1.SecretKeyIssuer: strings.TrimSuffix(tokenURL, "/oauth2/token")}}
	if ca != "" {
		cm.Data[m2mv1alpha1.SecretKeyCA] = ca
	}
	return cm
}

// tenantsSecret is the credentials Secret of whyKey's client as its tenant rewrote it: pointing
// at tokenURL, with ca as the CA to trust.
func tenantsSecret(tokenURL, ca string) []client.Object {
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: whyKey.Namespace, Name: whyKey.Name}}
	obj.Status.SecretName = "reports-credentials"
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: whyKey.Namespace, Name: "reports-credentials"}, Immutable: ptr.To(true),
		Data: map[string][]byte{m2mv1alpha1.SecretKeyTokenURL: []byte(tokenURL), m2mv1alpha1.SecretKeyIssuer: []byte(strings.TrimSuffix(tokenURL, "/oauth2/token")), m2mv1alpha1.SecretKeyCA: []byte(ca)}}
	return []client.Object{obj, s}
}

// recordingServer is a TLS server that records the Authorization header of every request: the
// server a tenant points its Secret at. It returns the server, its CA in PEM, and the headers.
func recordingServer(t *testing.T) (*httptest.Server, string, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		_, _ = w.Write([]byte(`{"replica":"attacker","refusals":[]}`))
	}))
	t.Cleanup(srv.Close)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return srv, ca, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

// An administrator runs why on a client whose tenant pointed its Secret (made immutable, so that
// the manager cannot restore it) at a server of theirs, with their CA: why asks the install's
// token server, which the manager's ConfigMap names, and the tenant's server gets nothing, least
// of all the administrator's Kubernetes token.
func TestWhyAsksTheInstallsTokenServerAndNeverTheOneTheClientsSecretNames(t *testing.T) {
	attacker, attackerCA, received := recordingServer(t)
	real, calls := fakeTokenServer(t, "admin-token", oneRefusal)
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).
		WithObjects(append(tenantsSecret(attacker.URL+"/oauth2/token", attackerCA), installConfigMap(real.URL+"/oauth2/token", ""))...).Build()
	var out bytes.Buffer
	if err := why(context.Background(), &rest.Config{BearerToken: "admin-token"}, c, &out, whyKey, "m2m-system", "", ""); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || !strings.Contains(out.String(), "wrong_secret") {
		t.Fatalf("the install's token server was asked %d times; output:\n%s", calls.Load(), out.String())
	}
	if got := received(); len(got) != 0 {
		t.Fatalf("the tenant's server received %d requests, with Authorization %q", len(got), got)
	}
}

// Without the install's ConfigMap, why says which ConfigMap it needs and which flags name the
// token server instead, and sends nothing anywhere, least of all where the client's Secret says.
func TestWhyWithoutTheInstallsConfigMapSaysWhatToPassAndSendsNothing(t *testing.T) {
	attacker, attackerCA, received := recordingServer(t)
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(tenantsSecret(attacker.URL+"/oauth2/token", attackerCA)...).Build()
	err := why(context.Background(), &rest.Config{BearerToken: "admin-token"}, c, &bytes.Buffer{}, whyKey, "m2m-system", "", "")
	if err == nil || !strings.Contains(err.Error(), "ConfigMap m2m-system/m2m-token-server") || !strings.Contains(err.Error(), "--system-namespace") || !strings.Contains(err.Error(), "--token-url") {
		t.Fatalf("error %v", err)
	}
	if got := received(); len(got) != 0 {
		t.Fatalf("the Secret's server received %d requests", len(got))
	}
}

// why trusts the install's ca.crt for the token server's certificate, or --ca-file, and
// without either refuses a certificate that no CA of the system signs.
func TestWhyTrustsTheInstallsCAOrCAFile(t *testing.T) {
	real := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(oneRefusal)) }))
	defer real.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: real.Certificate().Raw}))
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{BearerToken: "t"}
	withCA := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).WithObjects(installConfigMap(real.URL+"/oauth2/token", ca)).Build()
	if err := why(context.Background(), cfg, withCA, &bytes.Buffer{}, whyKey, "m2m-system", "", ""); err != nil {
		t.Fatalf("with the install's ca.crt: %v", err)
	}
	withoutCA := clusterWithTokenURL(real.URL + "/oauth2/token")
	if err := why(context.Background(), cfg, withoutCA, &bytes.Buffer{}, whyKey, "m2m-system", "", file); err != nil {
		t.Fatalf("with --ca-file: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := why(context.Background(), cfg, withoutCA, &bytes.Buffer{}, whyKey, "m2m-system", "", ""); !errors.As(err, &unknown) {
		t.Fatalf("with no CA: %v, want an unknown authority", err)
	}
}

// fakeTokenServer answers /refusals with answer to the bearer token want, and counts requests.
func fakeTokenServer(t *testing.T, want string, answer string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != refusalsPath || r.URL.Query().Get("namespace") != whyKey.Namespace || r.URL.Query().Get("name") != whyKey.Name {
			http.Error(w, "wrong request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+want {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"unauthenticated","message":"not that token"}`))
			return
		}
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

const oneRefusal = `{"namespace":"team-a","name":"reports","replica":"token-server-0","since":"2026-06-01T12:00:00Z","kept":20,"total":3,
"refusals":[{"time":"2026-06-01T12:01:00Z","endpoint":"token","reason":"wrong_secret","error":"invalid_client","method":"client_secret_basic","from":"10.1.2.3","help":"Make the workload read the client's Secret again."},
{"time":"2026-06-01T12:02:00Z","endpoint":"token","reason":"wrong_secret","error":"invalid_client","method":"client_secret_basic","from":"10.1.2.3","help":"Make the workload read the client's Secret again."}]}`

// A kubeconfig user with a token file gets the refusals as a table, what to do about each
// reason once, and the reminder that the answer is one replica's.
func TestWhyPrintsTheRefusalsAndWhatToDoForATokenFileUser(t *testing.T) {
	srv, _ := fakeTokenServer(t, "file-token", oneRefusal)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("file-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := why(context.Background(), &rest.Config{BearerTokenFile: file}, clusterWithTokenURL(srv.URL+"/oauth2/token"), &out, whyKey, "m2m-system", "", ""); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"replica token-server-0 refused M2MClient team-a/reports 3 times", "2026-06-01T12:01:00Z  token     wrong_secret  client_secret_basic  10.1.2.3", "What to do:\n  wrong_secret: Make the workload", "Each replica remembers only the requests it refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("the output lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "Make the workload") != 1 {
		t.Errorf("what to do is printed more than once per reason:\n%s", got)
	}
}

// An exec credential plugin (OIDC and cloud logins use one) gives the token through
// client-go's own transport wrappers.
func TestWhySendsTheTokenOfAnExecCredentialPlugin(t *testing.T) {
	srv, _ := fakeTokenServer(t, "exec-token", oneRefusal)
	cfg := &rest.Config{ExecProvider: &clientcmdapi.ExecConfig{
		APIVersion: "client.authentication.k8s.io/v1", Command: "sh", InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
		Args: []string{"-c", `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-token"}}'`},
	}}
	var out bytes.Buffer
	if err := why(context.Background(), cfg, clusterWithTokenURL(srv.URL+"/oauth2/token"), &out, whyKey, "m2m-system", "", ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "wrong_secret") {
		t.Fatalf("the output lacks the refusal:\n%s", out.String())
	}
}

// A kubeconfig that authenticates with a client certificate has no token to show the token
// server: the error says which identities work and the alternative, and nothing is sent.
func TestWhyWithAClientCertificateSaysWhatWorksInsteadAndSendsNothing(t *testing.T) {
	srv, calls := fakeTokenServer(t, "any", oneRefusal)
	for sentence, cfg := range map[string]*rest.Config{
		"a client certificate": {TLSClientConfig: rest.TLSClientConfig{CertData: []byte("cert"), KeyData: []byte("key")}},
		"a password":           {Username: "admin", Password: "secret"},
		"an exec plugin that gives a client certificate": {ExecProvider: &clientcmdapi.ExecConfig{
			APIVersion: "client.authentication.k8s.io/v1", Command: "cat", InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
			Args: []string{certCredential(t)},
		}},
	} {
		err := why(context.Background(), cfg, clusterWithTokenURL(srv.URL+"/oauth2/token"), &bytes.Buffer{}, whyKey, "m2m-system", "", "")
		if err == nil || !strings.Contains(err.Error(), "bearer token") || !strings.Contains(err.Error(), "kubectl create token") || !strings.Contains(err.Error(), "--zap-log-level=debug") {
			t.Errorf("%s: error %v", sentence, err)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the token server was asked %d times", n)
	}
}

// certCredential is a file with an ExecCredential of a client certificate and no token.
func certCredential(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "someone"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := json.Marshal(map[string]any{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": map[string]string{
		"clientCertificateData": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"clientKeyData":         string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "credential.json")
	if err := os.WriteFile(path, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The user's Kubernetes token never travels in the clear: a plain http token server is refused
// unless it is on a loopback address, before anything is sent.
func TestWhyRefusesToSendTheTokenOverPlainHTTPOffLoopback(t *testing.T) {
	err := why(context.Background(), &rest.Config{BearerToken: "t"}, clusterWithTokenURL("http://m2m.example.com/oauth2/token"), &bytes.Buffer{}, whyKey, "m2m-system", "", "")
	if err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("error %v, want a refusal of plain http", err)
	}
	var sent atomic.Bool
	guard := bearerOnly{base: roundTripFunc(func(*http.Request) (*http.Response, error) { sent.Store(true); return nil, nil })}
	req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1/refusals", nil)
	req.Header.Set("Authorization", "Bearer t")
	if _, err := guard.RoundTrip(req); err == nil || sent.Load() {
		t.Fatalf("a request to plain http off loopback (after a redirect, say) went out: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A 403 says what the user lacks, and a 401 that the token is not accepted.
func TestWhySaysWhatA401OrA403MeansForTheUser(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "forbidden"})
	}))
	defer srv.Close()
	err := why(context.Background(), &rest.Config{BearerToken: "t"}, clusterWithTokenURL(srv.URL+"/oauth2/token"), &bytes.Buffer{}, whyKey, "m2m-system", "", "")
	if err == nil || !strings.Contains(err.Error(), "may not get m2mclients reports in namespace team-a") {
		t.Fatalf("403: %v", err)
	}
	ts, _ := fakeTokenServer(t, "right", oneRefusal)
	err = why(context.Background(), &rest.Config{BearerToken: "wrong"}, clusterWithTokenURL(ts.URL+"/oauth2/token"), &bytes.Buffer{}, whyKey, "m2m-system", "", "")
	if err == nil || !strings.Contains(err.Error(), "does not accept your Kubernetes token") {
		t.Fatalf("401: %v", err)
	}
}

// With no refusal remembered, why says so and that another replica may remember some.
func TestWhyWithNoRefusalsSaysSoAndNamesTheReplica(t *testing.T) {
	srv, _ := fakeTokenServer(t, "t", `{"replica":"token-server-1","since":"2026-06-01T12:00:00Z","kept":20,"total":0,"refusals":[]}`)
	var out bytes.Buffer
	if err := why(context.Background(), &rest.Config{BearerToken: "t"}, clusterWithTokenURL(srv.URL+"/oauth2/token"), &out, whyKey, "m2m-system", "", ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "No refusals of M2MClient team-a/reports remembered by token server replica token-server-1 since 2026-06-01T12:00:00Z") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// A ServiceAccount token that `kubectl m2m token --service-account` mints for its caller goes to
// the install's token server, for the install's issuer, never where the client's Secret (which
// its tenant can write) points: the second review had an administrator's minted token sent to
// the tenant's server.
func TestTokenAsAServiceAccountSendsTheMintedTokenOnlyToTheInstallsTokenServer(t *testing.T) {
	var mu sync.Mutex
	var tenantGot, installGot []string
	record := func(into *[]string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			mu.Lock()
			*into = append(*into, r.PostForm.Get("client_assertion"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"a.b.c","token_type":"Bearer","expires_in":60}`))
		}
	}
	tenant := httptest.NewServer(record(&tenantGot))
	defer tenant.Close()
	install := httptest.NewServer(record(&installGot))
	defer install.Close()
	var audiences []string
	c := fake.NewClientBuilder().WithScheme(m2mv1alpha1.NewScheme()).
		WithObjects(append(tenantsSecret(tenant.URL+"/oauth2/token", ""), installConfigMap(install.URL+"/oauth2/token", ""))...).
		WithInterceptorFuncs(interceptor.Funcs{SubResourceCreate: func(_ context.Context, _ client.Client, sub string, _ client.Object, req client.Object, _ ...client.SubResourceCreateOption) error {
			tr := req.(*authenticationv1.TokenRequest)
			audiences = tr.Spec.Audiences
			tr.Status.Token = "MINTED-FOR-THE-CALLER"
			return nil
		}}).Build()
	if err := token(context.Background(), c, io.Discard, whyKey, &commandFlags{serviceAccount: "deployer", systemNamespace: "m2m-system"}); err != nil {
		t.Fatal(err)
	}
	if len(tenantGot) != 0 {
		t.Fatalf("the tenant's server received %q", tenantGot)
	}
	if len(installGot) != 1 || installGot[0] != "MINTED-FOR-THE-CALLER" || !slices.Equal(audiences, []string{install.URL}) {
		t.Fatalf("the install's server received %q; audiences %v", installGot, audiences)
	}
}

// token --public takes the public door's URL, which the install names when it has one; without
// a door it says so rather than asking the in-cluster Service.
func TestThePublicTokenURLComesFromThePublicDoorOnly(t *testing.T) {
	withDoor := installLocation{tokenURL: "https://m2m-token-server.m2m-system.svc/oauth2/token", publicTokenURL: "https://auth.example.com/oauth2/token"}
	for public, want := range map[bool]string{false: withDoor.tokenURL, true: withDoor.publicTokenURL} {
		if got, err := withDoor.url(public); err != nil || got != want {
			t.Fatalf("public=%v: %q, %v; want %q", public, got, err, want)
		}
	}
	noDoor := installLocation{tokenURL: withDoor.tokenURL}
	if _, err := noDoor.url(true); err == nil || !strings.Contains(err.Error(), "no public door") {
		t.Fatalf("--public on an install without a public door: %v", err)
	}
}
