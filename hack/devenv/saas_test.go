package devenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/issuer"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// The SaaS of docs/saas.md, on one system with a public door (make dev PUBLIC=1): the backend of
// config/samples/saas runs as a ServiceAccount bound only to the Role of its rbac.yaml.
const (
	customersNS = "customers"
	backendUser = "system:serviceaccount:saas:saas-backend"
	// apiAudience is the backend's, which every customer's token carries.
	apiAudience = "https://api.example.com"
)

// A SaaS hands its customers credentials that work through the public door, rotates them as the
// customers say, and serves one issuer through both doors; the guide says so in commands that
// work as written; and the backend can do nothing outside its namespace. One system serves
// every subtest: on make dev PUBLIC=1's addresses and .dev when they are free (the guide's
// commands name them), else on free ones, and then the guide's subtest is skipped.
func TestASaaSHandsItsCustomersCredentialsThroughThePublicDoor(t *testing.T) {
	root := controlplane.Root()
	var printed bytes.Buffer
	o := Options{PublicDoor: true, Out: &printed, TokenServerMetrics: "127.0.0.1:0", ManagerMetrics: "127.0.0.1:0"}
	onDefaults := free(hostOf(DefaultPublicIssuerURL), hostOf(DefaultTLSIssuerURL))
	if onDefaults {
		o.StateDir = filepath.Join(root, ".dev")
	} else {
		o.StateDir, o.IssuerURL, o.InClusterURL = t.TempDir(), "https://localhost:"+freePort(t), freeIssuer(t, "https")
	}
	sys, clients, _ := startReady(t, o)

	// First, on the system as make dev PUBLIC=1 leaves it, as a new user follows the guide.
	t.Run("the guide works as written", func(t *testing.T) {
		if !onDefaults {
			t.Skipf("%s or %s is taken (is make dev running?): the guide's commands name them", DefaultPublicIssuerURL, DefaultTLSIssuerURL)
		}
		theGuideWorksAsWritten(t, sys)
	})
	t.Run("make dev PUBLIC=1 names both doors and its printed steps go through the public one", func(t *testing.T) {
		sys.PrintNextSteps(clients)
		for _, want := range []string{"public door:   " + issuer.TokenURL(sys.IssuerURL), sys.PublicCAFile(), "token server:  " + issuer.TokenURL(sys.InClusterURL), "--cacert " + sys.PublicCAFile()} {
			if !strings.Contains(printed.String(), want) {
				t.Fatalf("the printed steps lack %q:\n%s", want, printed.String())
			}
		}
		got := runPrinted(t, printed.String(), sys.NextSteps(clients)...)
		for _, want := range []string{`"access_token":"`, `"keys":[{`, "wrong_secret"} {
			if !strings.Contains(got, want) {
				t.Fatalf("the printed commands' output lacks %q:\n%s", want, got)
			}
		}
	})
	installBackendRBAC(t, sys)
	backend := buildBackend(t, sys)
	t.Run("the backend hands out secrets that the customers switch and the old ones are refused", func(t *testing.T) {
		customersRotateTheirSecrets(t, sys, backend)
	})
	t.Run("two doors, one issuer", func(t *testing.T) {
		twoDoorsOneIssuer(t, sys, backend)
	})
	t.Run("the backend can do nothing outside its namespace", func(t *testing.T) {
		theBackendCanDoNothingOutsideItsNamespace(t, sys)
	})
	t.Run("a customer cannot choose the address the token server sees", func(t *testing.T) {
		aCustomerCannotChooseItsAddress(t, sys, backend)
	})
}

// theGuideWorksAsWritten runs docs/saas.md's walk-through after make dev PUBLIC=1, with the
// customer programs of its Customer code saved where it says.
func theGuideWorksAsWritten(t *testing.T, sys *System) {
	root := controlplane.Root()
	t.Cleanup(func() { _ = os.Remove(filepath.Join(root, ".dev", "saas-backend.kubeconfig")) })
	customer := section(t, "docs/saas.md", "## Customer code")
	dir := t.TempDir()
	for lang, file := range map[string]string{"go": "customer.go", "js": "customer.mjs", "python": "customer.py"} {
		blocks := codeBlocks(customer, lang)
		if len(blocks) != 1 {
			t.Fatalf("the guide's Customer code has %d %s programs, want 1", len(blocks), lang)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(blocks[0]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, bin := range []string{"node", "python3", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("the guide runs %s, which this machine lacks: %v", bin, err)
		}
	}
	shell := exec.Command("bash", "-euo", "pipefail", "-c", shellAfter(t, "docs/saas.md", "## Walk-through", "make dev PUBLIC=1"))
	shell.Dir = root
	shell.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+sys.Assets, "DIR="+dir)
	out, err := shell.CombinedOutput()
	if err != nil {
		t.Fatalf("the walk-through failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"yes", // the backend may create clients in customers
		`"token_url":"https://localhost:9443/oauth2/token"`, `"access_token":"`,
		// The metadata through each door.
		`"token_endpoint":"https://localhost:9443/oauth2/token"`, `"token_endpoint":"https://127.0.0.1:8443/oauth2/token"`,
		`"issuer":"https://localhost:9443"`,
		`"customer":"acme","rotation":"Completed"`,
		"Go: a Bearer token until", "Node: a Bearer token until", "Python: a Bearer token until",
		`"error":"invalid_client"`, " 401\n", "refused M2MClient customers/acme",
		`"customer":"acme","rotation":"Cancelled"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the walk-through's output lacks %q:\n%s", want, out)
		}
	}
	// kubectl m2m why names the customer's own address, which the door appended.
	if !regexp.MustCompile(`wrong_secret\s+client_secret_post\s+127\.0\.0\.1\n`).Match(out) {
		t.Fatalf("kubectl m2m why does not show the refusal of the old secret from 127.0.0.1:\n%s", out)
	}
}

// The guide shows the sample as it is: its Go excerpts are the backend's code, and its Role's
// rules are those of config/samples/saas/rbac.yaml.
func TestTheSaaSGuideShowsTheSamplesAsTheyAre(t *testing.T) {
	root := controlplane.Root()
	sample := string(readFile(t, filepath.Join(root, "config", "samples", "saas", "backend", "main.go")))
	guide := string(readFile(t, filepath.Join(root, "docs", "saas.md")))
	backendPart, _, _ := strings.Cut(guide, "\n## Customer code\n")
	excerpts := codeBlocks(backendPart, "go")
	if len(excerpts) == 0 {
		t.Fatal("the guide shows none of the backend's code")
	}
	for _, excerpt := range excerpts {
		if !strings.Contains(sample, excerpt) {
			t.Errorf("the guide's excerpt is not in config/samples/saas/backend/main.go:\n%s", excerpt)
		}
	}
	var shown rbacv1.Role
	if blocks := codeBlocks(section(t, "docs/saas.md", "## Creating clients per customer"), "yaml"); len(blocks) != 1 {
		t.Fatalf("the guide shows %d YAML blocks of the Role, want 1", len(blocks))
	} else if err := yaml.UnmarshalStrict([]byte(blocks[0]), &shown); err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Read(filepath.Join(root, "config", "samples", "saas"))
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if obj.GetKind() != "Role" {
			continue
		}
		var role rbacv1.Role
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &role); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(role.Rules, shown.Rules) {
			t.Fatalf("the guide's Role has the rules %+v, rbac.yaml's %+v", shown.Rules, role.Rules)
		}
		return
	}
	t.Fatal("config/samples/saas has no Role")
}

// customersRotateTheirSecrets plays the SaaS of issue 22: the backend creates a client per
// customer and reads its credentials once; the customer gets tokens through the door with curl
// and the JSON body; a rotation the backend completes refuses the old secret, one it cancels
// refuses the next.
func customersRotateTheirSecrets(t *testing.T, sys *System, backend func(...string) (map[string]string, error)) {
	a := mustBackend(t, backend, "create", "customer-a")
	if a["token_url"] != issuer.TokenURL(sys.IssuerURL) {
		t.Fatalf("the backend shows the customer the token URL %q, want the door's %s", a["token_url"], issuer.TokenURL(sys.IssuerURL))
	}
	if _, err := backend("create", "customer-a"); err == nil || !strings.Contains(err.Error(), "already has a client") {
		t.Fatalf("creating customer-a again: %v, want a refusal: its secret is shown once", err)
	}
	mustGetToken(t, sys, a["client_id"], a["client_secret"])
	next := mustBackend(t, backend, "rotate-start", "customer-a")["next_client_secret"]
	if next == "" || next == a["client_secret"] {
		t.Fatal("rotate-start showed no new secret")
	}
	mustGetToken(t, sys, a["client_id"], a["client_secret"])
	mustGetToken(t, sys, a["client_id"], next)
	mustBackend(t, backend, "rotate-complete", "customer-a")
	refusedEventually(t, sys, a["client_id"], a["client_secret"])
	mustGetToken(t, sys, a["client_id"], next)

	b := mustBackend(t, backend, "create", "customer-b")
	nextB := mustBackend(t, backend, "rotate-start", "customer-b")["next_client_secret"]
	mustGetToken(t, sys, b["client_id"], nextB)
	mustBackend(t, backend, "rotate-cancel", "customer-b")
	refusedEventually(t, sys, b["client_id"], nextB)
	mustGetToken(t, sys, b["client_id"], b["client_secret"])
}

// twoDoorsOneIssuer: a token got through the door and one got through the in-cluster URL carry
// the same iss and verify with one Verifier, whichever door it discovered the keys through; the
// metadata fetched through each door names that door's endpoints under the one issuer.
func twoDoorsOneIssuer(t *testing.T, sys *System, backend func(...string) (map[string]string, error)) {
	ctx := context.Background()
	c := mustBackend(t, backend, "create", "two-doors")
	public, inside := trusting(t, readFile(t, sys.PublicCAFile())), trusting(t, readFile(t, sys.CAFile()))
	body := clientCredentials(c["client_id"], c["client_secret"])
	var tokens []string
	for base, hc := range map[string]*http.Client{sys.IssuerURL: public, sys.InClusterURL: inside} {
		resp, err := testenv.PostToken(ctx, hc, base, "application/json", body)
		if err != nil || resp.AccessToken == "" {
			t.Fatalf("a token through %s: %v %s", base, err, resp.Raw)
		}
		tokens = append(tokens, resp.AccessToken)

		var md struct {
			Issuer        string `json:"issuer"`
			TokenEndpoint string `json:"token_endpoint"`
			JWKSURI       string `json:"jwks_uri"`
		}
		getJSON(t, hc, base+"/.well-known/oauth-authorization-server", &md)
		if md.Issuer != sys.IssuerURL || md.TokenEndpoint != issuer.TokenURL(base) || md.JWKSURI != base+"/.well-known/jwks.json" {
			t.Errorf("the metadata through %s: %+v, want the issuer %s and that door's endpoints", base, md, sys.IssuerURL)
		}
	}
	verifiers := map[string][]m2mauth.VerifierOption{
		"through the door":   {m2mauth.WithHTTPClient(public)},
		"through the inside": {m2mauth.WithDiscoveryURL(sys.InClusterURL), m2mauth.WithHTTPClient(inside)},
	}
	for name, opts := range verifiers {
		v, err := m2mauth.NewVerifier(ctx, sys.IssuerURL, append(opts, m2mauth.WithAudiences(apiAudience))...)
		if err != nil {
			t.Fatalf("a verifier %s: %v", name, err)
		}
		for _, token := range tokens {
			claims, err := v.Authenticate(ctx, token, m2mauth.RequiredScopes("read:invoices"))
			if err != nil {
				t.Fatalf("the verifier %s refused a token: %v", name, err)
			}
			if claims.Issuer != sys.IssuerURL || claims.Custom["customer"] != "two-doors" {
				t.Errorf("the verifier %s: iss %q, customer %v; want %s and two-doors", name, claims.Issuer, claims.Custom["customer"], sys.IssuerURL)
			}
		}
		v.Close()
	}
}

// theBackendCanDoNothingOutsideItsNamespace: the backend, impersonated against the real API
// server with only the Role of config/samples/saas/rbac.yaml, is refused every read and write of
// clients and Secrets in another namespace, and listing Secrets in its own.
func theBackendCanDoNothingOutsideItsNamespace(t *testing.T, sys *System) {
	ctx := context.Background()
	cfg := rest.CopyConfig(sys.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: backendUser, Groups: backendGroups()}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	victim := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "billing-worker"}}
	for what, err := range map[string]error{
		"get a client in default":             c.Get(ctx, client.ObjectKeyFromObject(victim), &m2mv1alpha1.M2MClient{}),
		"list the clients in default":         c.List(ctx, &m2mv1alpha1.M2MClientList{}, client.InNamespace("default")),
		"list the clients of every namespace": c.List(ctx, &m2mv1alpha1.M2MClientList{}),
		"create a client in default":          c.Create(ctx, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "intruder"}}),
		"patch a client in default":           c.Patch(ctx, victim, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"disabled":true}}`))),
		"delete a client in default":          c.Delete(ctx, victim),
		"read a Secret in default":            c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "billing-worker-credentials"}, &corev1.Secret{}),
		"read the signing keys":               c.Get(ctx, signingkeys.DefaultSecret, &corev1.Secret{}),
		"list the Secrets in customers":       c.List(ctx, &corev1.SecretList{}, client.InNamespace(customersNS)),
		"write a client's status":             c.Status().Update(ctx, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: customersNS, Name: "customer-a"}}),
		// The namespace's caps: a backend taken over mints no token for an internal service.
		"create a client with another scope": c.Create(ctx, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: customersNS, Name: "escalate-scope"},
			Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"admin:*"}, Audiences: []m2mv1alpha1.Audience{"https://api.example.com"}}}),
		"create a client for another audience": c.Create(ctx, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: customersNS, Name: "escalate-audience"},
			Spec: m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}, Audiences: []m2mv1alpha1.Audience{"https://payroll.internal"}}}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the backend may %s: %v, want Forbidden", what, err)
		}
	}
}

// aCustomerCannotChooseItsAddress: a customer that writes its own X-Forwarded-For through the
// door is refused under its real address, which the door appended, not the one it wrote.
func aCustomerCannotChooseItsAddress(t *testing.T, sys *System, backend func(...string) (map[string]string, error)) {
	if sys.doorSource == "" {
		t.Skip("the door connects from 127.0.0.1 on this system, which every local caller shares")
	}
	c := mustBackend(t, backend, "create", "forger")
	req, err := http.NewRequest(http.MethodPost, issuer.TokenURL(sys.IssuerURL), strings.NewReader(clientCredentials(c["client_id"], "not-the-secret")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := trusting(t, readFile(t, sys.PublicCAFile())).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong secret through the door: %d, want 401", resp.StatusCode)
	}
	why := exec.Command(filepath.Join(sys.PluginDir, "kubectl-m2m"), "why", "forger", "-n", customersNS, "--kubeconfig", sys.Kubeconfig)
	out, err := why.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl m2m why: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "127.0.0.1") || strings.Contains(string(out), "203.0.113.7") {
		t.Fatalf("the refusal is not from the customer's own address 127.0.0.1, or names the one it wrote:\n%s", out)
	}
}

// installBackendRBAC creates config/samples/saas/rbac.yaml's objects, as kubectl apply does (the
// guide may have applied them already).
func installBackendRBAC(t *testing.T, sys *System) {
	t.Helper()
	objs, err := manifests.Read(filepath.Join(controlplane.Root(), "config", "samples", "saas"))
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if err := sys.Client.Create(context.Background(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// buildBackend builds config/samples/saas/backend and returns a function that runs it as the
// backend's ServiceAccount (impersonated by the dev user, with a kubeconfig of its own) and
// parses its answer.
func buildBackend(t *testing.T, sys *System) func(args ...string) (map[string]string, error) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "saas-backend")
	build := exec.Command("go", "build", "-o", bin, "./config/samples/saas/backend")
	build.Dir = controlplane.Root()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the backend: %v\n%s", err, out)
	}
	kc, err := clientcmd.LoadFromFile(sys.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range kc.AuthInfos {
		user.Impersonate, user.ImpersonateGroups = backendUser, backendGroups()
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return func(args ...string) (map[string]string, error) {
		cmd := exec.Command(bin, append([]string{"-kubeconfig", kubeconfig}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("backend %v: %w: %s", args, err, stderr.String())
		}
		answer := map[string]string{}
		if err := json.Unmarshal(out, &answer); err != nil {
			return nil, fmt.Errorf("backend %v printed %q: %w", args, out, err)
		}
		return answer, nil
	}
}

// backendGroups are the groups the API server gives the backend's ServiceAccount.
func backendGroups() []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:saas", "system:authenticated"}
}

func mustBackend(t *testing.T, backend func(...string) (map[string]string, error), args ...string) map[string]string {
	t.Helper()
	answer, err := backend(args...)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}

// customerCurl asks for a token through the public door as a customer's machine does: curl with
// the JSON body of Stytch's docs, trusting the door's CA. It returns the status and the body.
func customerCurl(t *testing.T, sys *System, clientID, secret string) (int, string) {
	t.Helper()
	out, err := exec.Command("curl", "-s", "--cacert", sys.PublicCAFile(), issuer.TokenURL(sys.IssuerURL),
		"-H", "Content-Type: application/json", "-w", "\n%{http_code}", "-d", clientCredentials(clientID, secret)).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	body, code, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	var status int
	_, _ = fmt.Sscan(code, &status)
	return status, body
}

func mustGetToken(t *testing.T, sys *System, clientID, secret string) {
	t.Helper()
	if status, body := customerCurl(t, sys, clientID, secret); status != http.StatusOK || !strings.Contains(body, `"access_token":"`) {
		t.Fatalf("a customer's token through the door: %d %s", status, body)
	}
}

// refusedEventually waits until the token server, whose cache follows status, refuses secret
// with 401 invalid_client.
func refusedEventually(t *testing.T, sys *System, clientID, secret string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		if status, body := customerCurl(t, sys, clientID, secret); status != http.StatusUnauthorized || !strings.Contains(body, `"error":"invalid_client"`) {
			return fmt.Errorf("the secret got %d %s, want 401 invalid_client", status, body)
		}
		return nil
	})
}

func clientCredentials(clientID, secret string) string {
	b, _ := json.Marshal(map[string]string{"client_id": clientID, "client_secret": secret, "grant_type": "client_credentials"})
	return string(b)
}

func getJSON(t *testing.T, hc *http.Client, url string, v any) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hostOf(u string) string {
	parsed, _ := url.Parse(u)
	return parsed.Host
}

// free says whether every address can be listened on now.
func free(addrs ...string) bool {
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

func freePort(t *testing.T) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(freeIssuer(t, "https"), "https://"))
	return port
}
