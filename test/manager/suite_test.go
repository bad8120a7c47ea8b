package manager

import (
	"context"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

const testIssuer = "https://m2m.test.example"

// wait bounds how long a test waits for the manager to converge.
const wait = 30 * time.Second

var (
	env *testenv.Env
	// managerConfig authenticates as the manager's ServiceAccount of config/rbac, the one identity
	// that the admission policy m2m-manager-writes-status lets write status.
	managerConfig *rest.Config
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	e, err := testenv.StartInstalled()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, managerConfig = e.Env, e.ManagerConfig
	defer func() { _ = e.Stop() }()

	mgr, err := controllers.NewManager(managerConfig, controllers.Options{IssuerURL: testIssuer, MaxConcurrentReconciles: 4, MaxSourcesPerNamespace: sourcesPerNamespace})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	return code
}

// namespace creates a namespace of its own for one test.
func namespace(t *testing.T) string { return testenv.Namespace(t, env.Client) }

// allowImports marks ns as an admin would, so that its clients may import a spec.clientID
// (m2m-client-id-import), and waits until admission sees the mark.
func allowImports(t *testing.T, ns string) {
	t.Helper()
	annotate(t, ns, map[string]string{"m2m.dev/allow-client-id-import": "true"})
	probe := newClient(ns, "import-probe")
	probe.Spec.ClientID = "import-probe-id"
	testenv.Eventually(t, wait, func() error {
		return env.Client.Create(context.Background(), probe.DeepCopy(), client.DryRunAll)
	})
}

// annotate sets annotations on namespace ns as an admin does.
func annotate(t *testing.T, ns string, annotations map[string]string) {
	t.Helper()
	ctx := context.Background()
	obj := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: ns}, obj); err != nil {
		t.Fatal(err)
	}
	base := obj.DeepCopy()
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	maps.Copy(obj.Annotations, annotations)
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

func newClient(ns, name string) *m2mv1alpha1.M2MClient {
	return &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: m2mv1alpha1.M2MClientSpec{
			Scopes: []m2mv1alpha1.Scope{"read:things"},
		},
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, key client.Object) {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(key), key); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until the client's Ready condition has the status and reason given, for its
// current generation, and returns the client.
func waitReady(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) *m2mv1alpha1.M2MClient {
	t.Helper()
	return testenv.WaitReady(t, env.Client, ns, name, status, reason, wait)
}

func secretOf(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// events counts the events with reason about the named client.
func events(t *testing.T, ns, name, reason string) int {
	t.Helper()
	n, err := testenv.CountEvents(context.Background(), env.Client, ns, "M2MClient", name, reason)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitEvents waits until exactly n events with reason are recorded about the named client.
func waitEvents(t *testing.T, ns, name, reason string, n int) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		if got := events(t, ns, name, reason); got != n {
			return fmt.Errorf("%d %s events, want %d", got, reason, n)
		}
		return nil
	})
}

// waitReplaced waits until a new Secret (a new UID) stands where old was, and returns it.
func waitReplaced(t *testing.T, old *corev1.Secret) *corev1.Secret {
	t.Helper()
	fresh := &corev1.Secret{}
	testenv.Eventually(t, wait, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(old), fresh); err != nil {
			return err
		}
		if fresh.UID == old.UID {
			return fmt.Errorf("the old Secret is still there")
		}
		return nil
	})
	return fresh
}

// deleteAndWait deletes obj and waits until the API server no longer has it.
func deleteAndWait(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}

// bumpGeneration changes the client's description, so that the next waitReady waits for a
// reconcile that ran after this moment, and returns the client at its new generation.
func bumpGeneration(t *testing.T, ns, name string) *m2mv1alpha1.M2MClient {
	t.Helper()
	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	get(t, obj)
	base := obj.DeepCopy()
	obj.Spec.Description = fmt.Sprintf("generation %d", obj.Generation+1)
	if err := env.Client.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	return obj
}
