package upgrade

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/servingcert"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
	"github.com/m2m-dev/m2m-operator/test/support/volume"
)

const (
	// publicIssuer is issuer B, the public door's URL. Nothing here resolves it: pods keep
	// reaching the token server at the in-cluster URL, and resource servers fetch keys there.
	publicIssuer = "https://auth.example.com"
	// apiAudience is the resource server's identifier, every client's spec.audiences.
	apiAudience = "https://api.example.com"
	// kubeletPeriod is how often the kubelet here reads a mounted Secret again.
	kubeletPeriod = 200 * time.Millisecond
)

var (
	caSecret   = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-ca"}
	certSecret = types.NamespacedName{Namespace: "m2m-system", Name: "m2m-token-server-tls"}
)

// The runbook of docs/operations.md, "Moving to a public issuer", step by step, against the real
// API server, with the manager and the token server that ship, restarted with the flags each
// step names. The install starts as the default one does: issuer A is the in-cluster URL (here
// the Service's loopback address), over HTTPS with the manager's CA. It moves to issuer B, a
// public door, while pods of the three kinds of holder ask for tokens all the time through the
// Service: a client secret, a generated key pair (private_key_jwt, whose assertion's aud is the
// issuer its Secret names), and a ServiceAccount (whose projected token's audience is fixed in
// the pod spec until the pod is redeployed). A resource server checks every token. No request of
// any holder is refused, by the token server or by the resource server, and no token-server
// replica counts a failure. After the move, what the runbook says to change before dropping
// --previous-issuer-url is indeed refused once it is dropped.
func TestMovingToAPublicIssuerUnderLoadRefusesNoHolder(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	managerConfig, tokenServerConfig, err := testenv.InstallRBAC(ctx, env.Environment, env.Client, controlplane.Root())
	if err != nil {
		t.Fatal(err)
	}
	svc := startService(t)
	inCluster := svc.url() // issuer A

	// The install before the move: issuer A everywhere.
	stopManager := testenv.RunManager(t, managerConfig, moveManagerOptions(inCluster, ""))
	certs := mount(t, env, certSecret, servingcert.TLSKey)
	old := startReplica(t, tokenServerConfig, certs, "--issuer-url="+inCluster)
	svc.add(old.addr)

	ns := testenv.Namespace(t, env.Client)
	secretDir := mountClient(t, env, ns, "billing", m2mv1alpha1.ClientAuthentication{})
	keyDir := mountClient(t, env, ns, "signer", m2mv1alpha1.ClientAuthentication{KeyPair: &m2mv1alpha1.KeyPairPolicy{}})
	workerDir := mountClient(t, env, ns, "worker", m2mv1alpha1.ClientAuthentication{ClientSecret: ptr.To(false), ServiceAccounts: []string{"worker"}})
	// The worker pod's spec names audience A for its projected token: it sends A until it is
	// redeployed, whatever its Secret says.
	workerTokenA := projectedToken(t, env, ns, "worker", inCluster)

	l := newLoad(t, inCluster, filepath.Join(secretDir, m2mv1alpha1.SecretKeyCA))
	secretPod := l.start(t, "client-secret", func(ctx context.Context) (oauth2.TokenSource, error) {
		return m2mauth.NewTokenSource(ctx, secretDir)
	})
	keyPod := l.start(t, "private_key_jwt", func(ctx context.Context) (oauth2.TokenSource, error) {
		return m2mauth.NewTokenSource(ctx, keyDir)
	})
	workerA := l.start(t, "ServiceAccount, audience A", func(ctx context.Context) (oauth2.TokenSource, error) {
		return m2mauth.NewServiceAccountTokenSource(ctx, workerDir, workerTokenA)
	})
	l.waitForTokens(t, inCluster, 30)
	beforeMove := secretPod.first(inCluster)

	// Step 1 is the load's resource server: a Verifier for each issuer.
	// Step 2: the token server, rolled to issuer B, with A as its in-cluster URL and its previous
	// issuer. Pods still hold Secrets that say A.
	t.Log("step 2: the token server moves to issuer B")
	moving := startReplica(t, tokenServerConfig, certs, "--issuer-url="+publicIssuer, "--in-cluster-url="+inCluster, "--previous-issuer-url="+inCluster)
	serverFailures := roll(t, svc, l, old, moving)
	l.waitForTokens(t, publicIssuer, 30)

	// Step 3: the manager, restarted with issuer B and A as its in-cluster URL.
	t.Log("step 3: the manager moves to issuer B")
	stopManager()
	testenv.RunManager(t, managerConfig, moveManagerOptions(publicIssuer, inCluster))
	for _, dir := range []string{secretDir, keyDir, workerDir} {
		testenv.Eventually(t, wait, func() error {
			return mountedLocation(dir, map[string]string{
				m2mv1alpha1.SecretKeyIssuer:         publicIssuer,
				m2mv1alpha1.SecretKeyTokenURL:       inCluster + "/oauth2/token",
				m2mv1alpha1.SecretKeyPublicTokenURL: publicIssuer + "/oauth2/token",
			})
		})
	}
	l.waitForTokens(t, publicIssuer, 30) // the key pair's assertions now name B

	// Step 5 (while the previous issuer is set): a token issued before the move still
	// introspects as active, with its issuer A.
	if active, iss := introspect(t, l.hc, inCluster, secretDir, beforeMove); !active || iss != inCluster {
		t.Fatalf("a token issued before the move introspects as active %v with iss %q during the move, want active with %s", active, iss, inCluster)
	}

	// Before step 4: the worker pod is redeployed with audience B.
	t.Log("the worker pod is redeployed with audience B")
	workerTokenB := projectedToken(t, env, ns, "worker", publicIssuer)
	workerB := l.start(t, "ServiceAccount, audience B", func(ctx context.Context) (oauth2.TokenSource, error) {
		return m2mauth.NewServiceAccountTokenSource(ctx, workerDir, workerTokenB)
	})
	l.stopPod(workerA)

	// Step 4: --previous-issuer-url dropped.
	t.Log("step 4: the token server drops the previous issuer")
	moved := startReplica(t, tokenServerConfig, certs, "--issuer-url="+publicIssuer, "--in-cluster-url="+inCluster)
	serverFailures += roll(t, svc, l, moving, moved)
	l.waitForTokens(t, publicIssuer, 30)
	l.stopAll()
	serverFailures += moved.failures(t)

	if n := l.refused.Load() + l.failed.Load() + l.rejected.Load(); n > 0 || serverFailures > 0 {
		t.Fatalf("%d of %d requests were refused by the token server, %d failed otherwise, %d tokens were refused by the resource server, and the replicas counted %v failures; the first: %v",
			l.refused.Load(), l.requests.Load(), l.failed.Load(), l.rejected.Load(), serverFailures, l.firstProblem.Load())
	}
	for p, issuers := range map[*pod][]string{secretPod: {inCluster, publicIssuer}, keyPod: {inCluster, publicIssuer}, workerA: {inCluster, publicIssuer}, workerB: {publicIssuer}} {
		for _, iss := range issuers {
			if p.tokens(iss) == 0 {
				t.Fatalf("the %s pod got no token of %s: the load did not span the move", p.name, iss)
			}
		}
	}
	t.Logf("%d token requests across the move, none refused: %s", l.requests.Load(), l.summary())

	// After the drop, what the runbook says to change first is refused if it was not: a pod
	// still sending audience A, a private_key_jwt assertion for A (a pod that never re-read
	// its Secret), and a token of issuer A at introspection.
	stillA, err := m2mauth.NewServiceAccountTokenSource(l.podContext(t), workerDir, workerTokenA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stillA.Token(); !invalidClient(err) {
		t.Fatalf("a ServiceAccount token for audience A after the drop: %v, want invalid_client", err)
	}
	stale, err := m2mauth.NewPrivateKeyTokenSource(l.podContext(t), m2mauth.PrivateKeyClient{
		ClientID: readFile(t, keyDir, m2mv1alpha1.SecretKeyClientID), TokenURL: inCluster + "/oauth2/token",
		Issuer: inCluster, Key: privateKey(t, keyDir),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Token(); !invalidClient(err) {
		t.Fatalf("a private_key_jwt assertion for audience A after the drop: %v, want invalid_client", err)
	}
	if active, _ := introspect(t, l.hc, inCluster, secretDir, beforeMove); active {
		t.Fatal("a token of issuer A introspects as active after the drop")
	}
	// The count that stayed at 0 across the move counts these two refusals.
	if n := moved.failures(t); n != 2 {
		t.Fatalf("the replica counted %v failures after two refused requests", n)
	}
}

// moveManagerOptions are the manager's flags of the steps: --issuer-url and --in-cluster-url,
// with the serving certificate of the default install.
func moveManagerOptions(issuerURL, inClusterURL string) controllers.Options {
	return controllers.Options{
		IssuerURL: issuerURL, InClusterURL: inClusterURL, SkipNameValidation: true,
		ServingCert: &controllers.ServingCertOptions{CASecret: caSecret, CertSecret: certSecret, Hosts: []string{"m2m-token-server.m2m-system.svc"}},
	}
}

// mount keeps a directory in step with the Secret key, as the kubelet keeps a pod's Secret
// volume, until the test ends, and returns it once the file want is there.
func mount(t *testing.T, env *testenv.Env, key types.NamespacedName, want string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { volume.Follow(ctx, env.Client, key, dir, kubeletPeriod); close(done) }()
	// Before the directory goes: nothing writes into it once done is closed.
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, wait, func() error {
		_, err := os.Stat(filepath.Join(dir, want))
		return err
	})
	return dir
}

// mountClient creates a client for the resource server with auth, waits until it is Ready, and
// mounts its Secret; it returns the directory once the Secret has its CA bundle.
func mountClient(t *testing.T, env *testenv.Env, ns, name string, auth m2mv1alpha1.ClientAuthentication) string {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: m2mv1alpha1.M2MClientSpec{
		Scopes: []m2mv1alpha1.Scope{"read:things"}, Audiences: []m2mv1alpha1.Audience{apiAudience}, Authentication: auth}}
	testenv.CreateReady(t, env.Client, obj, wait)
	return mount(t, env, types.NamespacedName{Namespace: ns, Name: obj.Status.SecretName}, m2mv1alpha1.SecretKeyCA)
}

// mountedLocation says which of want's files in dir do not hold their value yet.
func mountedLocation(dir string, want map[string]string) error {
	for k, v := range want {
		if got, err := os.ReadFile(filepath.Join(dir, k)); err != nil || string(got) != v {
			return fmt.Errorf("%s: %s holds %q (%v), want %q", dir, k, got, err, v)
		}
	}
	return nil
}

// projectedToken is the file of a projected token of the ServiceAccount ns/name for audience,
// as the kubelet writes one from a pod's spec.
func projectedToken(t *testing.T, env *testenv.Env, ns, name, audience string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(testenv.ServiceAccountToken(t, env.Client, ns, name, 10*time.Minute, audience)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replica is one token-server pod: the token server that ships, started with a command line as
// cmd/token-server parses it, serving the certificate the manager issues.
type replica struct {
	addr, metricsURL string
	stop             func()
}

func startReplica(t *testing.T, cfg *rest.Config, certs string, args ...string) *replica {
	t.Helper()
	args = append(args, "--tls-cert-file="+filepath.Join(certs, servingcert.TLSCert), "--tls-key-file="+filepath.Join(certs, servingcert.TLSKey))
	o, err := tokenserver.ParseArgs(flag.NewFlagSet("token-server", flag.ContinueOnError), args)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Listener, o.MetricsListener = ln, metricsLn
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	var runErr error
	go func() { runErr = tokenserver.Run(ctx, cfg, o); close(exited) }()
	r := &replica{addr: ln.Addr().String(), metricsURL: "http://" + metricsLn.Addr().String() + "/metrics"}
	r.stop = sync.OnceFunc(func() {
		cancel()
		<-exited
		if runErr != nil {
			t.Errorf("the token server %s: %v", args, runErr)
		}
	})
	t.Cleanup(r.stop)
	hc, err := testenv.BundleClient(filepath.Join(certs, servingcert.TLSCA))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		select {
		case <-exited:
			t.Fatalf("the token server %s did not start: %v", args, runErr)
		default:
		}
		resp, err := hc.Get("https://" + r.addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})
	return r
}

// failures is what the replica counted as failed token and introspection requests.
func (r *replica) failures(t *testing.T) float64 {
	t.Helper()
	n, err := testenv.MetricSum(r.metricsURL, "m2m_token_failures_total")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// roll replaces the replica from with to, as a rolling update with one pod of surge: to joins
// the Service and serves next to from for a few requests of every pod, from leaves it, and from
// stops once every pod has finished a request started after that, the last that could have
// reached it (each request has a connection of its own), as a terminating pod serves its
// connections to the end. It returns the failures that from counted.
func roll(t *testing.T, svc *service, l *load, from, to *replica) float64 {
	t.Helper()
	svc.add(to.addr)
	l.waitForRequests(t, 10)
	svc.remove(from.addr)
	l.waitForRequests(t, 2)
	n := from.failures(t)
	from.stop()
	return n
}

// load runs pods that each ask for a token again and again, and counts what goes wrong.
type load struct {
	hc *http.Client
	rs []*m2mauth.Verifier

	requests atomic.Int64
	// refused: the token server answered with an error; failed: no answer; rejected: the
	// resource server refused the token.
	refused, failed, rejected atomic.Int64
	firstProblem              atomic.Value

	mu   sync.Mutex
	pods []*pod
}

// newLoad makes the pods' HTTP client, which trusts the CA bundle of their Secrets and opens a
// connection for each request, so that a replica that left the Service gets no request after
// those in flight; and the resource server of step 1, which accepts a token if the Verifier of
// either issuer does. Both Verifiers take the keys from the in-cluster JWKS URL, not from
// discovery: the metadata names one issuer at a time, A before the token server moves and B
// after, so a Verifier that discovers its keys could be made for one of them only.
func newLoad(t *testing.T, inCluster, caFile string) *load {
	t.Helper()
	hc, err := testenv.BundleClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	l := &load{hc: hc}
	for _, iss := range []string{inCluster, publicIssuer} {
		v, err := m2mauth.NewVerifier(context.Background(), iss, m2mauth.WithJWKSURL(inCluster+"/.well-known/jwks.json"),
			m2mauth.WithCAFile(caFile), m2mauth.WithAudiences(apiAudience))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		l.rs = append(l.rs, v)
	}
	t.Cleanup(l.stopAll)
	return l
}

// podContext is the context of a pod's token source: the pods' HTTP client, until the test ends.
func (l *load) podContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), oauth2.HTTPClient, l.hc))
	t.Cleanup(cancel)
	return ctx
}

// pod is a workload that asks for a token every 20 ms, each time with a token source made anew
// from its files as they are then (so that a refused request is seen, not covered by a cached
// token), and sends each token to the resource server.
type pod struct {
	name      string
	newSource func(context.Context) (oauth2.TokenSource, error)
	stop      chan struct{}
	done      chan struct{}
	// finished counts the requests that ended, however.
	finished atomic.Int64

	mu sync.Mutex
	// byIssuer counts the tokens the resource server accepted by their iss; firstOf keeps the
	// first of each.
	byIssuer map[string]int
	firstOf  map[string]string
}

// start runs a pod until it is stopped, and waits for its first accepted token.
func (l *load) start(t *testing.T, name string, newSource func(context.Context) (oauth2.TokenSource, error)) *pod {
	t.Helper()
	p := &pod{name: name, newSource: newSource, stop: make(chan struct{}), done: make(chan struct{}), byIssuer: map[string]int{}, firstOf: map[string]string{}}
	l.mu.Lock()
	l.pods = append(l.pods, p)
	l.mu.Unlock()
	go l.run(p)
	testenv.Eventually(t, wait, func() error {
		if p.total() == 0 {
			return fmt.Errorf("the %s pod has no token yet; the first problem: %v", name, l.firstProblem.Load())
		}
		return nil
	})
	return p
}

func (l *load) run(p *pod) {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), oauth2.HTTPClient, l.hc))
		ts, err := p.newSource(ctx)
		var tok *oauth2.Token
		if err == nil {
			tok, err = ts.Token()
		}
		cancel()
		l.requests.Add(1)
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500:
			l.problem(&l.refused, fmt.Errorf("%s: refused: %w", p.name, err))
		case err != nil:
			l.problem(&l.failed, fmt.Errorf("%s: %w", p.name, err))
		default:
			if claims, err := l.authenticate(tok.AccessToken); err != nil {
				l.problem(&l.rejected, fmt.Errorf("%s: the resource server: %w", p.name, err))
			} else {
				p.accepted(claims.Issuer, tok.AccessToken)
			}
		}
		p.finished.Add(1)
	}
}

// authenticate is the resource server: the first Verifier that accepts the token decides.
func (l *load) authenticate(token string) (*m2mauth.Claims, error) {
	var errs []error
	for _, v := range l.rs {
		claims, err := v.Authenticate(context.Background(), token)
		if err == nil {
			return claims, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (l *load) problem(counter *atomic.Int64, err error) {
	counter.Add(1)
	l.firstProblem.CompareAndSwap(nil, err.Error())
}

func (p *pod) accepted(iss, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byIssuer[iss]++
	if p.firstOf[iss] == "" {
		p.firstOf[iss] = token
	}
}

func (p *pod) tokens(iss string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byIssuer[iss]
}

func (p *pod) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.byIssuer {
		n += c
	}
	return n
}

func (p *pod) first(iss string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstOf[iss]
}

// running are the pods not stopped.
func (l *load) running() []*pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*pod
	for _, p := range l.pods {
		select {
		case <-p.stop:
		default:
			out = append(out, p)
		}
	}
	return out
}

// waitForTokens waits until every running pod has had n more tokens of iss accepted; it fails
// at once on a request that went wrong, which fails the test anyway.
func (l *load) waitForTokens(t *testing.T, iss string, n int) {
	t.Helper()
	want := map[*pod]int{}
	for _, p := range l.running() {
		want[p] = p.tokens(iss) + n
	}
	testenv.Eventually(t, wait, func() error {
		if first := l.firstProblem.Load(); first != nil {
			t.Fatalf("waiting for tokens of %s: %v", iss, first)
		}
		for p, w := range want {
			if p.tokens(iss) < w {
				return fmt.Errorf("the %s pod has %d tokens of %s, want %d", p.name, p.tokens(iss), iss, w)
			}
		}
		return nil
	})
}

// waitForRequests waits until every running pod has finished n more requests, however they
// ended: the n-th started after the call.
func (l *load) waitForRequests(t *testing.T, n int64) {
	t.Helper()
	want := map[*pod]int64{}
	for _, p := range l.running() {
		want[p] = p.finished.Load() + n
	}
	testenv.Eventually(t, wait, func() error {
		for p, w := range want {
			if p.finished.Load() < w {
				return fmt.Errorf("the %s pod finished %d requests, want %d", p.name, p.finished.Load(), w)
			}
		}
		return nil
	})
}

// stopPod stops p and waits for its request in flight.
func (l *load) stopPod(p *pod) {
	l.mu.Lock()
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	l.mu.Unlock()
	<-p.done
}

// stopAll stops every pod; it may be called more than once.
func (l *load) stopAll() {
	l.mu.Lock()
	pods := append([]*pod(nil), l.pods...)
	l.mu.Unlock()
	for _, p := range pods {
		l.stopPod(p)
	}
}

// summary is each pod's accepted tokens by issuer.
func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, p := range l.pods {
		p.mu.Lock()
		parts = append(parts, fmt.Sprintf("%s %v", p.name, p.byIssuer))
		p.mu.Unlock()
	}
	return strings.Join(parts, "; ")
}

// introspect asks the token server about token (RFC 7662), authenticated with the client secret
// mounted at dir, and returns the answer's active and iss.
func introspect(t *testing.T, hc *http.Client, inCluster, dir, token string) (bool, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, inCluster+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(readFile(t, dir, m2mv1alpha1.SecretKeyClientID)), url.QueryEscape(readFile(t, dir, m2mv1alpha1.SecretKeyClientSecret)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Active bool   `json:"active"`
		Iss    string `json:"iss"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspection: %d, %v", resp.StatusCode, err)
	}
	return body.Active, body.Iss
}

func readFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// privateKey is the key pair's private key mounted at dir.
func privateKey(t *testing.T, dir string) crypto.Signer {
	t.Helper()
	block, _ := pem.Decode([]byte(readFile(t, dir, m2mv1alpha1.SecretKeyPrivateKey)))
	if block == nil {
		t.Fatal("the mounted private_key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("the mounted private_key is a %T", key)
	}
	return signer
}

func invalidClient(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == "invalid_client"
}
