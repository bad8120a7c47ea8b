// Package e2e runs the real manager and the real token server against a real API server, and
// drives them the way a service would: with the credentials from the Secret and plain HTTP.
package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const wait = 30 * time.Second

var (
	env    *testenv.Env
	issuer string
	// metricsURL is the token server's /metrics, on its own listener.
	metricsURL string
	// managerConfig and tokenServerConfig authenticate as the ServiceAccounts of config/rbac,
	// so every test here also checks that their RBAC is enough.
	managerConfig, tokenServerConfig *rest.Config
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	certs, err := os.MkdirTemp("", "m2m-e2e-apiserver")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(certs)
	e, err := testenv.Start(testenv.RestartableAPIServer(certs))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = e
	defer func() { _ = e.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if managerConfig, tokenServerConfig, err = testenv.InstallRBAC(ctx, e.Environment, e.Client, controlplane.Root()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	issuer = "http://" + ln.Addr().String()
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	metricsURL = "http://" + metricsLn.Addr().String() + "/metrics"

	federated = newFederatedIssuer()
	defer federated.Close()

	mgr, err := controllers.NewManager(managerConfig, controllers.Options{IssuerURL: issuer})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	tsDone := make(chan error, 1)
	go func() {
		// Without an IssuanceLimit, off: the load tests ask for one client's tokens every few
		// milliseconds, far above the default of 600 a minute. issuance_test.go runs a server
		// with the limit.
		tsDone <- tokenserver.Run(ctx, tokenServerConfig, tokenserver.Options{
			IssuerURL:        issuer,
			Listener:         ln,
			MetricsListener:  metricsLn,
			SigningKeySecret: signingkeys.DefaultSecret,
			FederatedIssuers: []tokenserver.FederatedIssuer{{Issuer: federated.URL}},
		})
	}()
	if err := testenv.WaitOK(issuer+"/readyz", wait); err != nil {
		fmt.Fprintln(os.Stderr, "the token server never became ready:", err)
		return 1
	}

	code := m.Run()
	cancel()
	for name, done := range map[string]chan error{"manager": mgrDone, "token server": tsDone} {
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			code = 1
		}
	}
	return code
}

// namespace creates a namespace of its own for one test.
func namespace(t *testing.T) string { return testenv.Namespace(t, env.Client) }

// readyClient creates obj and waits until it is Ready, and returns its Secret.
func readyClient(t *testing.T, obj *m2mv1alpha1.M2MClient) *corev1.Secret {
	t.Helper()
	testenv.CreateReady(t, env.Client, obj, wait)
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: obj.Namespace, Name: obj.Status.SecretName}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// jwksKeyfunc fetches the JWKS over HTTP, as any verifier would, and finds keys by kid.
func jwksKeyfunc(t *testing.T) jwt.Keyfunc {
	t.Helper()
	return testenv.Keyfunc(testenv.JWKS(t, issuer))
}
