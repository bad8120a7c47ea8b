package devenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// startReady starts a system with o (assets and root filled in), waits until its samples are
// Ready, and returns it with the clients and a stop function that is safe to call twice.
func startReady(t *testing.T, o Options) (*System, []m2mv1alpha1.M2MClient, func() error) {
	t.Helper()
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	o.Assets, o.Root, o.SkipNameValidation = assets, controlplane.Root(), true
	sys, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { stopErr = sys.Stop() })
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clients, err := sys.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sys, clients, stop
}

// freeIssuer is an issuer URL of scheme on a loopback port that was free a moment ago.
func freeIssuer(t *testing.T, scheme string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return scheme + "://" + l.Addr().String()
}

// The system behind `make dev` comes up with the samples Ready, the commands it prints get a
// token when pasted into a shell, and stopping it leaves no kubeconfig pointing at closed ports.
func TestTheDevSystemMakesTheSamplesReadyAndStopsCleanly(t *testing.T) {
	var out bytes.Buffer
	issuer := freeIssuer(t, "http")
	sys, clients, stop := startReady(t, Options{StateDir: t.TempDir(), IssuerURL: issuer, Out: &out, TokenServerMetrics: "127.0.0.1:0", ManagerMetrics: "127.0.0.1:0"})
	ctx := context.Background()
	if len(clients) == 0 {
		t.Fatal("config/samples created no M2MClient")
	}
	for _, c := range clients {
		s := &corev1.Secret{}
		if err := sys.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Status.SecretName}, s); err != nil {
			t.Fatalf("sample %s has no Secret: %v", c.Name, err)
		}
	}
	sys.PrintNextSteps(clients)
	if !strings.Contains(out.String(), "plain HTTP on loopback, for development only") {
		t.Fatalf("the printed URLs do not say that make dev serves plain HTTP:\n%s", out.String())
	}
	if !strings.Contains(out.String(), sys.Kubeconfig) || !strings.Contains(out.String(), "get m2mclients") {
		t.Fatalf("the printed next steps lack the kubeconfig or a kubectl line:\n%s", out.String())
	}

	got := runPrinted(t, out.String(), sys.NextSteps(clients)...)
	for _, want := range []string{clients[0].Status.ClientID, "Active", `"access_token":"`, `"token_type":"Bearer"`, `"keys":[{`,
		// The wrong secret sent last, as kubectl m2m why shows it to the dev user.
		"refused M2MClient default/", "wrong_secret", "What to do:"} {
		if !strings.Contains(string(got), want) {
			t.Fatalf("the printed commands' output lacks %q:\n%s", want, got)
		}
	}
	// The printed metrics URLs serve the token server's and the manager's metrics.
	for url, metric := range map[string]string{sys.TokenServerMetricsURL: `m2m_token_failures_total{namespace="default",reason="wrong_secret"} 1`, sys.ManagerMetricsURL: "m2m_manager_clients"} {
		if url == "" || !strings.Contains(out.String(), url) {
			t.Fatalf("the metrics URL %q is not printed:\n%s", url, out.String())
		}
		if body := get(t, url); !strings.Contains(body, metric) {
			t.Fatalf("%s lacks %s:\n%s", url, metric, body)
		}
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sys.Kubeconfig); !os.IsNotExist(err) {
		t.Fatalf("the kubeconfig is still there after stopping: %v", err)
	}
}

// runPrinted runs lines, each of which must be in printed, exactly as a person would paste them
// into a shell, and returns what they print.
func runPrinted(t *testing.T, printed string, lines ...string) string {
	t.Helper()
	for _, line := range lines {
		if !strings.Contains(printed, line) {
			t.Fatalf("the line %q is not printed:\n%s", line, printed)
		}
	}
	shell := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	shell.Env = os.Environ()
	got, err := shell.CombinedOutput()
	if err != nil {
		t.Fatalf("the printed commands failed: %v\n%s", err, got)
	}
	return string(got)
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// section is the part of the Markdown file (a path under the repository) under heading, up to
// the next heading of its level.
func section(t *testing.T, file, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(controlplane.Root(), file))
	if err != nil {
		t.Fatal(err)
	}
	_, part, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q", file, heading)
	}
	level := heading[:strings.Index(heading, " ")+1]
	part, _, _ = strings.Cut(part, "\n"+level)
	return part
}

// codeBlocks are the fenced blocks of lang in text, in order.
func codeBlocks(text, lang string) []string {
	var blocks []string
	for _, part := range strings.Split(text, "```"+lang+"\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		blocks = append(blocks, block)
	}
	return blocks
}

// shellAfter returns the shell blocks of the section of file under heading that follow the one
// that starts the system (start, such as make dev), joined into one script.
func shellAfter(t *testing.T, file, heading, start string) string {
	t.Helper()
	var blocks []string
	for _, block := range codeBlocks(section(t, file, heading), "sh") {
		if strings.TrimSpace(block) != start {
			blocks = append(blocks, block)
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("%s's %q has no commands after %s", file, heading, start)
	}
	return strings.Join(blocks, "\n")
}

// The README's quick start, exactly as written, against the system `make dev` runs: on the
// documented address, with the kubeconfig in the repository's .dev.
func TestTheREADMEQuickStartWorksAsWritten(t *testing.T) {
	const addr = "127.0.0.1:8080"
	for _, a := range []string{addr, DefaultTokenServerMetrics, DefaultManagerMetrics} {
		if l, err := net.Listen("tcp", a); err != nil {
			t.Skipf("%s is taken (is make dev running?): %v", a, err)
		} else {
			l.Close()
		}
	}
	root := controlplane.Root()
	_, _, stop := startReady(t, Options{StateDir: filepath.Join(root, ".dev"), IssuerURL: "http://" + addr, Out: io.Discard,
		TokenServerMetrics: DefaultTokenServerMetrics, ManagerMetrics: DefaultManagerMetrics})
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	shell := exec.Command("bash", "-euo", "pipefail", "-c", shellAfter(t, "README.md", "## Quick start", "make dev"))
	shell.Dir = root
	shell.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets)
	out, err := shell.CombinedOutput()
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		`"access_token":"`, `"keys":[{`, "m2mclient.m2m.dev/reports created", "reports",
		// The Stytch-shaped client, with no audience: pkg/m2mauth accepts its token with the
		// issuer as the audience and a required scope.
		"m2mclient.m2m.dev/foo-service created", "m2mclient.m2m.dev/foo-service condition met",
		"\"aud\": \"http://" + addr + "\"", "\"scope\": \"read:settings write:settings\"",
		// A wrong secret: the dev user sees why with kubectl m2m why, and the metrics count it.
		"refused M2MClient default/billing-worker", "wrong_secret", `m2m_token_failures_total{namespace="default",reason="wrong_secret"}`, "m2m_manager_clients{",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the quick start's output lacks %q:\n%s", want, out)
		}
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Ctrl-C leaves no port behind: a second make dev can start at once.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is still taken after stopping: %v", addr, err)
	}
	l.Close()
}

// `make dev DEFAULT_AUDIENCE=…` reaches the token server: the system says which default audience
// it uses, and a client with no spec.audiences gets tokens for it.
func TestTheDevSystemUsesTheDefaultAudienceItIsGiven(t *testing.T) {
	var out bytes.Buffer
	issuer := freeIssuer(t, "http")
	const aud = "https://dev.example.com"
	sys, clients, _ := startReady(t, Options{StateDir: t.TempDir(), IssuerURL: issuer, DefaultAudience: aud, Out: &out})
	sys.PrintNextSteps(clients)
	if !strings.Contains(out.String(), "default aud:   "+aud) {
		t.Fatalf("the printed steps do not name the default audience:\n%s", out.String())
	}
	ctx := context.Background()
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "no-audience"}}
	if err := sys.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func() error {
		if err := sys.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		s := &corev1.Secret{}
		if err := sys.Client.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: obj.Status.SecretName}, s); err != nil {
			return err
		}
		resp, err := testenv.ClientCredentials(ctx, http.DefaultClient, issuer, string(s.Data[m2mv1alpha1.SecretKeyClientID]), string(s.Data[m2mv1alpha1.SecretKeyClientSecret]))
		if err != nil || resp.AccessToken == "" {
			return fmt.Errorf("no token yet: %v %s", err, resp.Raw)
		}
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(resp.AccessToken, claims); err != nil {
			return err
		}
		if got, _ := claims.GetAudience(); len(got) != 1 || got[0] != aud {
			t.Fatalf("the token's aud is %v, want [%s]", got, aud)
		}
		return nil
	})
}
