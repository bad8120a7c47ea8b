package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/test/support/controlplane"
	"github.com/m2m-dev/m2m-operator/test/support/manifests"
)

// InstallAdmission creates the admission policies of config/admission and waits until the API
// server enforces them: a policy takes effect a moment after it is created.
func InstallAdmission(ctx context.Context, e *Env) error {
	if err := manifests.Create(ctx, e.Client, filepath.Join(controlplane.Root(), "config", "admission")); err != nil {
		return err
	}
	probe := &m2mv1alpha1.M2MClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "admission-probe"},
		Spec:       m2mv1alpha1.M2MClientSpec{TokenClaims: m2mv1alpha1.TokenClaims{"SUB": apiextensionsv1.JSON{Raw: []byte(`"x"`)}}},
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := e.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		return apierrors.IsInvalid(err) && strings.Contains(err.Error(), "tokenClaims"), nil
	})
}

// Grant is what a tenant may do in its own namespace, beyond M2MClients.
type Grant string

const (
	// GrantClients: create, get, list, watch, update, patch and delete M2MClients, nothing else.
	GrantClients Grant = "clients"
	// GrantSecrets adds read and write on Secrets, as Kubernetes' built-in edit role grants.
	GrantSecrets Grant = "clients+secrets"
	// GrantStatus adds Secrets and m2mclients/status, as a grant of m2m.dev "*" does.
	GrantStatus Grant = "clients+secrets+status"
)

// Tenant returns a client that impersonates a user whose only rights are grant in namespace ns,
// through a Role and RoleBinding there: the attacker of the tenant-isolation tests.
func Tenant(t testing.TB, e *Env, ns string, grant Grant) client.Client {
	t.Helper()
	ctx := context.Background()
	all := []string{"create", "get", "list", "watch", "update", "patch", "delete"}
	rules := []rbacv1.PolicyRule{{APIGroups: []string{m2mv1alpha1.GroupVersion.Group}, Resources: []string{"m2mclients"}, Verbs: all}}
	if grant == GrantSecrets || grant == GrantStatus {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: all})
	}
	if grant == GrantStatus {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{m2mv1alpha1.GroupVersion.Group}, Resources: []string{"m2mclients/status"}, Verbs: all})
	}
	name := fmt.Sprintf("tenant-%s", strings.ReplaceAll(string(grant), "+", "-"))
	user := "tenant:" + ns + ":" + string(grant)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := e.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: m2mv1alpha1.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ServiceAccount returns a client config that authenticates as the named ServiceAccount, with
// the groups the API server gives one, so that tests run components under their real RBAC.
func ServiceAccount(e *envtest.Environment, ns, name string) (*rest.Config, error) {
	u, err := e.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}, nil)
	if err != nil {
		return nil, err
	}
	cfg := u.Config()
	cfg.QPS, cfg.Burst = 500, 1000
	return cfg, nil
}

// InstallRBAC creates the operator's namespace and the RBAC of root/config/rbac, and returns client
// configs that authenticate as the manager's and the token server's ServiceAccounts, so that the
// components run under the RBAC that ships.
func InstallRBAC(ctx context.Context, e *envtest.Environment, c client.Client, root string) (manager, tokenServer *rest.Config, err error) {
	ns := signingkeys.DefaultSecret.Namespace
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, nil, err
	}
	if err := manifests.Create(ctx, c, filepath.Join(root, "config", "rbac")); err != nil {
		return nil, nil, err
	}
	if manager, err = ServiceAccount(e, ns, "m2m-manager"); err != nil {
		return nil, nil, err
	}
	if tokenServer, err = ServiceAccount(e, ns, "m2m-token-server"); err != nil {
		return nil, nil, err
	}
	return manager, tokenServer, nil
}

// Installed is a control plane with the operator installed as a cluster has it: its namespace, the
// RBAC of config/rbac and the admission policies of config/admission.
type Installed struct {
	*Env
	// ManagerConfig and TokenServerConfig authenticate as the manager's and the token server's
	// ServiceAccounts, so that the components run under the RBAC that ships.
	ManagerConfig, TokenServerConfig *rest.Config
}

// StartInstalled starts a control plane with options and installs the operator's RBAC and
// admission policies (InstallRBAC, InstallAdmission).
func StartInstalled(options ...func(*envtest.Environment)) (*Installed, error) {
	e, err := Start(options...)
	if err != nil {
		return nil, err
	}
	in := &Installed{Env: e}
	ctx := context.Background()
	if in.ManagerConfig, in.TokenServerConfig, err = InstallRBAC(ctx, e.Environment, e.Client, controlplane.Root()); err == nil {
		err = InstallAdmission(ctx, e)
	}
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	return in, nil
}
