// Package testenv starts a real kube-apiserver and etcd (envtest) with the m2m.dev CRDs
// installed, for integration tests. The binaries come from hack/control-plane.sh.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/m2m-dev/m2m-operator/internal/controlplane"
	"github.com/m2m-dev/m2m-operator/internal/operator"
)

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Start starts a control plane with the CRDs of config/crd/bases installed. Options adjust the
// environment before it starts.
func Start(options ...func(*envtest.Environment)) (*Env, error) {
	assets, err := controlplane.Assets()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(controlplane.Root(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	for _, o := range options {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		// Start can fail after the processes are up (installing CRDs); never leave them behind.
		_ = env.Stop()
		return nil, fmt.Errorf("starting envtest from %s: %w", assets, err)
	}
	// Integration tests create many objects; the default client rate limit would dominate.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Environment: env, Config: cfg, Client: c}, nil
}

// RestartableAPIServer keeps the API server's certificates in dir, so that the API server can be
// stopped and started again (env.ControlPlane.APIServer) and clients still trust it. A stop that
// takes longer than three seconds kills the process, as a crash would.
func RestartableAPIServer(dir string) func(*envtest.Environment) {
	return func(e *envtest.Environment) {
		e.ControlPlane.APIServer = &envtest.APIServer{CertDir: dir, StopTimeout: 3 * time.Second}
	}
}

// Main runs a test binary's tests against a control plane that *env points to while they run.
func Main(m *testing.M, env **Env) int {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv: stopping:", err)
	}
	return code
}

// Eventually calls check until it returns nil, and fails the test with its last error after
// timeout. It bounds a wait for the system to converge; it asserts nothing about speed.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RunManager starts a manager built with operator.NewManager and stops it when the test ends.
func RunManager(t testing.TB, cfg *rest.Config, o operator.Options) {
	t.Helper()
	mgr, err := operator.NewManager(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager: %v", err)
		}
	})
}
