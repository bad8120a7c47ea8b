// Package failover kills parts of the system under token load against a real API server, and
// counts what fails: a token-server replica behind a round-robin front, and the manager leader in
// the middle of rotating every client. What dies is a real process (the test binary re-executed
// in a role, process_test.go) killed with SIGKILL, so that its sockets close and its lease stops
// being renewed as in a cluster.
//
// Each test runs M2M_FAILURE_CLIENTS clients (50 by default; `make failure-test` runs 1,000)
// and logs its figures with t.Logf; docs/reliability.md records them.
package failover

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// clientsEnv sets the number of clients of each test.
const clientsEnv = "M2M_FAILURE_CLIENTS"

var env *testenv.Env

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(helperMain(role))
	}
	// The in-process manager's and token server's logs go to a file, kept when a test fails.
	logs, err := os.CreateTemp("", "failover-suite-*.log")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logf.SetLogger(zap.New(zap.WriteTo(logs), zap.Level(zapcore.InfoLevel)))
	code := testenv.Main(m, &env)
	if code == 0 {
		_ = os.Remove(logs.Name())
	} else {
		fmt.Fprintln(os.Stderr, "the in-process components' logs:", logs.Name())
	}
	os.Exit(code)
}

// rbac is config/rbac, installed by the first test that needs it.
var rbac struct {
	once sync.Once
	// manager and tokenServer authenticate as the ServiceAccounts of config/rbac, so that the
	// components run under the RBAC that ships.
	manager, tokenServer *rest.Config
	err                  error
}

// componentConfigs installs config/rbac once and returns the configs of the manager's and the
// token server's ServiceAccounts.
func componentConfigs(t *testing.T) (manager, tokenServer *rest.Config) {
	t.Helper()
	rbac.once.Do(func() {
		rbac.manager, rbac.tokenServer, rbac.err = testenv.InstallRBAC(context.Background(), env.Environment, env.Client, controlplane.Root())
	})
	if rbac.err != nil {
		t.Fatal(rbac.err)
	}
	return rbac.manager, rbac.tokenServer
}

// clientCount is the number of clients each test runs.
func clientCount(t *testing.T) int {
	t.Helper()
	v := os.Getenv(clientsEnv)
	if v == "" {
		return 50
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		t.Fatalf("%s=%q: want a number of clients, at least 2", clientsEnv, v)
	}
	return n
}

// settleTimeout bounds a wait for n clients to converge; it asserts nothing about speed.
func settleTimeout(n int) time.Duration { return time.Minute + time.Duration(n)*200*time.Millisecond }

// clientName is the name of the i-th client.
func clientName(i int) string { return fmt.Sprintf("client-%04d", i) }

// createClients creates n clients in ns and waits until every one is Ready; it returns their
// Secrets, in the clients' order.
func createClients(t *testing.T, ns string, n int) []*corev1.Secret {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := env.Client.Create(ctx, &m2mv1alpha1.M2MClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: clientName(i)},
			Spec: m2mv1alpha1.M2MClientSpec{
				Scopes:    []m2mv1alpha1.Scope{"read:things"},
				Audiences: []m2mv1alpha1.Audience{"https://api.example.com"},
			},
		}); err != nil {
			t.Fatal(err)
		}
	}
	var list m2mv1alpha1.M2MClientList
	testenv.Eventually(t, settleTimeout(n), func() error {
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		ready := 0
		for _, o := range list.Items {
			if meta.IsStatusConditionTrue(o.Status.Conditions, m2mv1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%d of %d clients Ready", ready, n)
		}
		return nil
	})
	return clientSecrets(t, ns, n)
}

// clientSecrets reads the Secrets of the n clients of ns, in the clients' order.
func clientSecrets(t *testing.T, ns string, n int) []*corev1.Secret {
	t.Helper()
	var list m2mv1alpha1.M2MClientList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var secrets corev1.SecretList
	if err := env.Client.List(context.Background(), &secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	byName := map[string]*corev1.Secret{}
	for i := range secrets.Items {
		byName[secrets.Items[i].Name] = &secrets.Items[i]
	}
	out := make([]*corev1.Secret, n)
	for _, o := range list.Items {
		var i int
		if _, err := fmt.Sscanf(o.Name, "client-%04d", &i); err != nil || i >= n || byName[o.Status.SecretName] == nil {
			t.Fatalf("client %s: unexpected, or without its Secret %q", o.Name, o.Status.SecretName)
		}
		out[i] = byName[o.Status.SecretName]
	}
	return out
}
