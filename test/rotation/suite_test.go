// Package rotation tests credential rotation against a real API server, with the manager and the
// token server on one fake clock, in cert-manager's style: the test moves time, then nudges the
// client so that the manager looks at it at the new time.
package rotation

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const (
	wait = 30 * time.Second
	// sharedNamespace is the one the suite's manager watches; tests that run managers of their
	// own use other namespaces.
	sharedNamespace = "rotation"
)

var (
	logFile string
	env     *testenv.Env
	clk     *clocktesting.FakeClock
	issuer  string
)

func TestMain(m *testing.M) {
	// The crash tests make the manager fail on purpose, so logs go to a file, shown only when
	// the suite cannot start.
	logs, _ := os.CreateTemp("", "rotation-suite-*.log")
	logFile = logs.Name()
	logf.SetLogger(zap.New(zap.WriteTo(logs), zap.Level(zapcore.InfoLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	e, err := testenv.Start()
	if err != nil {
		return fail(err)
	}
	env = e
	defer func() { _ = e.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"m2m-system", sharedNamespace} {
		if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return fail(err)
		}
	}
	clk = clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	issuer = "http://" + ln.Addr().String()
	mgr, err := controllers.NewManager(e.Config, managerOptions(sharedNamespace))
	if err != nil {
		return fail(err)
	}
	mgrDone, tsDone := make(chan error, 1), make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	go func() {
		// Without an IssuanceLimit, off: the load cycles through few clients faster than the
		// default of 600 a minute each, and what is measured is the rotation.
		tsDone <- tokenserver.Run(ctx, e.Config, tokenserver.Options{IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret, Clock: clk})
	}()
	// Generous: in a full `go test ./...` the machine also compiles and runs the other packages.
	if err := testenv.WaitOK(issuer+"/readyz", 4*wait); err != nil {
		data, _ := os.ReadFile(logFile)
		return fail(fmt.Errorf("the token server never became ready: %w\n%s", err, data))
	}
	code := m.Run()
	cancel()
	for _, done := range []chan error{mgrDone, tsDone} {
		if err := <-done; err != nil {
			code = fail(err)
		}
	}
	return code
}

func managerOptions(namespaces ...string) controllers.Options {
	return controllers.Options{IssuerURL: issuer, Clock: clk, WatchNamespaces: namespaces, SkipNameValidation: true}
}

func rotatingClient(ns, name string, mutate func(*m2mv1alpha1.M2MClient)) *m2mv1alpha1.M2MClient {
	obj := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: m2mv1alpha1.M2MClientSpec{
			Scopes:    []m2mv1alpha1.Scope{"read:things"},
			Audiences: []m2mv1alpha1.Audience{"https://api.example.com"},
		},
	}
	if mutate != nil {
		mutate(obj)
	}
	return obj
}

// settled waits until the client is Ready for its generation, the Secret carries the one
// unexpiring accepted secret, and check (if any) holds; it returns the client and its secret.
func settled(t *testing.T, key types.NamespacedName, check func(*m2mv1alpha1.M2MClient, string) error) (*m2mv1alpha1.M2MClient, string) {
	t.Helper()
	ctx := context.Background()
	obj := &m2mv1alpha1.M2MClient{}
	var secret string
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(ctx, key, obj); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) || obj.Status.ObservedGeneration != obj.Generation {
			return fmt.Errorf("not Ready at generation %d", obj.Generation)
		}
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: obj.Status.SecretName}, s); err != nil {
			return err
		}
		secret = string(s.Data[m2mv1alpha1.SecretKeyClientSecret])
		if credentials.Entries(obj.Status.AcceptedSecrets).Unexpiring() != 1 || controllers.DecideSecret(obj, s, clk.Now()).Action != controllers.ActionNone {
			return fmt.Errorf("a rotation is still in progress: %+v", obj.Status.AcceptedSecrets)
		}
		if check != nil {
			return check(obj, secret)
		}
		return nil
	})
	return obj, secret
}

// poke makes the manager reconcile the client at the fake clock's new time: the requeue it
// asked for is in real time.
func poke(t *testing.T, key types.NamespacedName) {
	t.Helper()
	testenv.Poke(t, env.Client, &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}})
}

// tokenStatus asks the token server for a token with the client's ID and the given secret.
func tokenStatus(t *testing.T, clientID, secret string) int {
	t.Helper()
	resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, issuer, clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusOK && (resp.Error == "" || resp.Status >= 500) {
		t.Fatalf("status %d with body %s", resp.Status, resp.Raw)
	}
	return resp.Status
}

// tokenEventually waits until the token server answers want for the secret: its cache follows
// the API server a moment behind.
func tokenEventually(t *testing.T, clientID, secret string, want int) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		if got := tokenStatus(t, clientID, secret); got != want {
			return fmt.Errorf("token request answered %d, want %d", got, want)
		}
		return nil
	})
}

// rotations counts the Rotated events about a client.
func rotations(t *testing.T, key types.NamespacedName) int {
	t.Helper()
	n, err := testenv.CountEvents(context.Background(), env.Client, key.Namespace, "M2MClient", key.Name, m2mv1alpha1.EventRotated)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
