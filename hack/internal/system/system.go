// Package system runs the whole system in one process for the benchmarks that need both halves:
// an envtest control plane, the manager, and the token server on a loopback port.
package system

import (
	"context"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// readyWithin bounds the wait for the token server's /readyz.
const readyWithin = time.Minute

// System is a running control plane with the manager and the token server.
type System struct {
	Env *testenv.Env
	// Issuer is the token server's issuer URL, http on loopback.
	Issuer string
}

// Start starts a control plane, creates the operator's namespace and namespace, and runs the
// manager (with o; its issuer URL and client rate limits set here) and the token server (default
// options: the issuance limit off) until ctx ends, and waits until the token server is ready.
// Stop the control plane with Env.Stop.
func Start(ctx context.Context, namespace string, o controllers.Options) (*System, error) {
	env, err := testenv.Start()
	if err != nil {
		return nil, err
	}
	s, err := start(ctx, env, namespace, o)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return s, nil
}

func start(ctx context.Context, env *testenv.Env, namespace string, o controllers.Options) (*System, error) {
	for _, name := range []string{"m2m-system", namespace} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	issuer := "http://" + ln.Addr().String()
	// Rate limits that leave the API server, not the manager's client, as the limit.
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	o.IssuerURL = issuer
	mgr, err := controllers.NewManager(cfg, o)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	go func() { _ = mgr.Start(ctx) }()
	go func() {
		// Without an IssuanceLimit, off: the benchmarks' consumers ask each client for more than
		// the default of 600 tokens a minute, and what is measured is something else.
		_ = tokenserver.Run(ctx, env.Config, tokenserver.Options{IssuerURL: issuer, Listener: ln, SigningKeySecret: signingkeys.DefaultSecret})
	}()
	if err := testenv.WaitOK(issuer+"/readyz", readyWithin); err != nil {
		return nil, err
	}
	return &System{Env: env, Issuer: issuer}, nil
}
