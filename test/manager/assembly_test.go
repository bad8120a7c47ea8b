// Tests of the manager's assembly, controllers.NewManager, each against a control plane of its
// own, so that what it checks (leader election, probes, metrics, namespaces, RBAC) is not
// disturbed by the suite's shared manager. They live here rather than beside NewManager because
// the controllers' own tests link no control plane (test/layout).
// Each manager sets SkipNameValidation: the suite's manager registered the controllers' names
// first in this process.

package manager

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/controllers"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpGet returns the status and body of a GET of url.
func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestTheManagerElectsALeaderServesProbesAndMetricsAndStaysInItsNamespaces(t *testing.T) {
	e, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the manager stops before the API server does.
	t.Cleanup(func() { _ = e.Stop() })
	ctx := context.Background()
	for _, ns := range []string{"watched", "ignored", "m2m-system"} {
		if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	probes, metrics := freeAddr(t), freeAddr(t)
	testenv.RunManager(t, e.Config, controllers.Options{
		IssuerURL:               "https://m2m.example",
		SkipNameValidation:      true,
		WatchNamespaces:         []string{"watched"},
		ProbeAddr:               probes,
		MetricsAddr:             metrics,
		LeaderElection:          true,
		LeaderElectionNamespace: "default",
	})

	ignored := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "ignored", Name: "c"}}
	watched := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "watched", Name: "c"}}
	for _, obj := range []*m2mv1alpha1.M2MClient{ignored, watched} {
		if err := e.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(watched), watched); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(watched.Status.Conditions, m2mv1alpha1.ConditionReady) {
			return fmt.Errorf("the client in the watched namespace is not Ready")
		}
		return nil
	})
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(ignored), ignored); err != nil {
		t.Fatal(err)
	}
	if len(ignored.Status.Conditions) != 0 || ignored.Status.ClientID != "" {
		t.Fatalf("the manager reconciled a client outside its namespaces: %+v", ignored.Status)
	}

	lease := &coordinationv1.Lease{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "m2m-manager.m2m.dev"}, lease); err != nil {
		t.Fatalf("no leader election lease: %v", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		testenv.Eventually(t, 30*time.Second, func() error {
			code, body, err := httpGet("http://" + probes + path)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%s: %d %s %v", path, code, body, err)
			}
			return nil
		})
	}
	code, body, err := httpGet("http://" + metrics + "/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(body, `controller_runtime_reconcile_total{controller="m2mclient"`) {
		t.Fatalf("metrics: %d %v; reconcile metrics missing", code, err)
	}

	// The fleet gauges count the clients of the watched namespace, as the cache's events change
	// them: the Ready client, and not the one outside (which would count as Unknown/Unknown).
	fleetGauges := func(want ...string) func() error {
		return func() error {
			_, body, err := httpGet("http://" + metrics + "/metrics")
			if err != nil {
				return err
			}
			var got []string
			for _, line := range strings.Split(body, "\n") {
				if strings.HasPrefix(line, "m2m_manager_clients{") || strings.HasPrefix(line, "m2m_manager_credentials_expiring_within_hour ") {
					got = append(got, line)
				}
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("the fleet gauges are %q, want %q", got, want)
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, fleetGauges(`m2m_manager_clients{reason="CredentialsReady",state="Active"} 1`, "m2m_manager_credentials_expiring_within_hour 0"))
	if err := e.Client.Delete(ctx, watched); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, fleetGauges("m2m_manager_credentials_expiring_within_hour 0"))
}

// docs/operations.md says how to narrow the manager's Secret access: --watch-namespaces, and the
// m2m-manager ClusterRole bound by RoleBindings in those namespaces and in m2m-system instead of
// cluster-wide. A manager that authenticates as a user bound only that way (with its ConfigMap
// Role of m2m-system) makes a client in a watched namespace Ready, writes the signing keys and
// publishes where the token server is.
func TestWithWatchNamespacesTheManagerWorksWithItsRoleBoundInThoseNamespacesOnly(t *testing.T) {
	e, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	ctx := context.Background()
	for _, ns := range []string{"team-a", "m2m-system"} {
		if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	roles, err := manifests.Read(filepath.Join(controlplane.Root(), "config", "rbac"))
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range roles {
		// The ConfigMap Role is m2m-system's alone already, as config/rbac binds it.
		if obj.GetKind() == "ClusterRole" && (obj.GetName() == "m2m-manager" || obj.GetName() == "m2m-manager-client-ids") ||
			obj.GetKind() == "Role" && obj.GetName() == "m2m-manager-configmaps" {
			if err := e.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
	}
	const user = "narrow-manager"
	if err := e.Client.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "m2m-system", Name: "m2m-manager-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "m2m-manager-configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}); err != nil {
		t.Fatal(err)
	}
	// Client ID bindings are cluster-scoped: their role stays bound cluster-wide.
	if err := e.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "m2m-manager-client-ids"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "m2m-manager-client-ids"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team-a", "m2m-system"} {
		if err := e.Client.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m2m-manager"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "m2m-manager"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	narrow, err := e.AddUser(envtest.User{Name: user, Groups: []string{"system:authenticated"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The user may not list Secrets cluster-wide: the binding really is narrow.
	c, err := client.New(narrow.Config(), client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing every Secret: %v, want forbidden", err)
	}
	testenv.RunManager(t, narrow.Config(), controllers.Options{IssuerURL: "https://m2m.example", WatchNamespaces: []string{"team-a"}, SkipNameValidation: true})

	obj := &m2mv1alpha1.M2MClient{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "c"}}
	if err := e.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(obj.Status.Conditions, m2mv1alpha1.ConditionReady) {
			return fmt.Errorf("the client is not Ready: %+v", obj.Status.Conditions)
		}
		if err := e.Client.Get(ctx, signingkeys.DefaultSecret, &corev1.Secret{}); err != nil {
			return err
		}
		return e.Client.Get(ctx, client.ObjectKey{Namespace: "m2m-system", Name: m2mv1alpha1.TokenServerConfigMap}, &corev1.ConfigMap{})
	})
}
