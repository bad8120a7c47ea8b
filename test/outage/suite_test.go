// Package outage kills parts of the control plane under the real manager and the real token
// server, with the RBAC that ships, while clients rotate and pods ask for tokens: the API server
// stops and starts again, and etcd turns slow, then stops answering. It counts what fails; it
// measures and logs how long recovery takes, and asserts nothing about speed.
//
// M2M_FAILURE_CLIENTS sets the number of clients (50 by default; `make failure-test` runs 1,000).
package outage

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

var (
	env *testenv.Env
	// etcdLink is the only way from the API server to etcd.
	etcdLink *slowLink
	issuer   string
	// metricsURL is the token server's /metrics.
	metricsURL string
	// managerRequests counts every request the manager sends to the API server.
	managerRequests atomic.Int64
	// clients is how many clients each test rotates.
	clients = 50
)

func TestMain(m *testing.M) {
	// The outages make the manager, the token server and client-go's reflectors log errors on
	// purpose; the tests say what matters.
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel+1)))
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	if v := os.Getenv("M2M_FAILURE_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fail(fmt.Errorf("M2M_FAILURE_CLIENTS=%q is not a positive number", v))
		}
		clients = n
	}
	certs, err := os.MkdirTemp("", "m2m-outage-apiserver")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(certs)
	if etcdLink, err = newSlowLink(); err != nil {
		return fail(err)
	}
	defer etcdLink.close()
	e, err := testenv.Start(testenv.RestartableAPIServer(certs), func(e *envtest.Environment) {
		// etcd has its address by the time the API server, which starts after it, dials.
		etcdLink.target = func() string { return e.ControlPlane.Etcd.URL.Host }
		e.ControlPlane.APIServer.Configure().Set("etcd-servers", etcdLink.URL())
	})
	if err != nil {
		return fail(err)
	}
	env = e
	defer func() { _ = e.Stop() }()
	managerConfig, tokenServerConfig, err := testenv.InstallRBAC(context.Background(), e.Environment, e.Client, controlplane.Root())
	if err != nil {
		return fail(err)
	}
	managerConfig.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			managerRequests.Add(1)
			return rt.RoundTrip(r)
		})
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	issuer = "http://" + ln.Addr().String()
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	metricsURL = "http://" + metricsLn.Addr().String() + "/metrics"
	mgr, err := controllers.NewManager(managerConfig, controllers.Options{IssuerURL: issuer})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgrDone, tsDone := make(chan error, 1), make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	go func() {
		// Without an IssuanceLimit, off: the load's unpaced workers ask for each client's tokens
		// more often than the default of 600 a minute, and what is measured is the outage.
		tsDone <- tokenserver.Run(ctx, tokenServerConfig, tokenserver.Options{
			IssuerURL: issuer, Listener: ln, MetricsListener: metricsLn, SigningKeySecret: signingkeys.DefaultSecret,
		})
	}()
	if err := testenv.WaitOK(issuer+"/readyz", 2*time.Minute); err != nil {
		return fail(fmt.Errorf("the token server never became ready: %w", err))
	}
	code := m.Run()
	cancel()
	for name, done := range map[string]chan error{"manager": mgrDone, "token server": tsDone} {
		if err := <-done; err != nil {
			code = fail(fmt.Errorf("%s: %w", name, err))
		}
	}
	return code
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
