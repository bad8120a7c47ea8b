package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// The API server selects M2MClients by status.clientID (the CRD's selectableFields): a list
// with the field selector finds exactly the client, and a tenant only within its namespace.
func TestTheFieldSelectorOnStatusClientIDFindsExactlyTheClientAndATenantOnlyInItsNamespace(t *testing.T) {
	ctx := context.Background()
	nsA, nsB := namespace(t), namespace(t)
	a, b := billingClient(nsA, "a"), billingClient(nsB, "b")
	readyClient(t, a)
	readyClient(t, b)
	byID := func(id string) client.ListOption { return client.MatchingFields{"status.clientID": id} }

	all := &m2mv1alpha1.M2MClientList{}
	if err := env.Client.List(ctx, all, byID(a.Status.ClientID)); err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 1 || all.Items[0].Namespace != nsA || all.Items[0].Name != "a" {
		t.Fatalf("the field selector status.clientID=%s found %d clients, want exactly %s/a: %+v", a.Status.ClientID, len(all.Items), nsA, all.Items)
	}

	tenant := testenv.Tenant(t, env, nsA, testenv.GrantClients)
	if err := tenant.List(ctx, &m2mv1alpha1.M2MClientList{}, byID(b.Status.ClientID)); !apierrors.IsForbidden(err) {
		t.Fatalf("a tenant of %s listed clients of every namespace by ID: %v", nsA, err)
	}
	for id, want := range map[string]int{a.Status.ClientID: 1, b.Status.ClientID: 0} {
		own := &m2mv1alpha1.M2MClientList{}
		if err := tenant.List(ctx, own, byID(id), client.InNamespace(nsA)); err != nil {
			t.Fatal(err)
		}
		if len(own.Items) != want {
			t.Errorf("a tenant of %s selecting %s in its namespace found %d clients, want %d", nsA, id, len(own.Items), want)
		}
	}
}

// kubectl m2m whois finds the client of a token the token server issued, with its key still
// published; a tenant finds its own client by ID, and not another namespace's.
func TestKubectlM2MWhoisFindsTheClientOfATokenAndATenantOnlyItsOwn(t *testing.T) {
	kc := kubeconfigFile(t)
	nsA, nsB := namespace(t), namespace(t)
	a, b := billingClient(nsA, "a"), billingClient(nsB, "b")
	readyClient(t, a)
	readyClient(t, b)

	code, out, errOut := kubectlM2M("token", "a", "-n", nsA, "--kubeconfig", kc)
	if code != 0 {
		t.Fatalf("token: %d %s", code, errOut)
	}
	code, out, errOut = kubectlM2M("whois", strings.TrimSpace(out), "--kubeconfig", kc)
	for _, want := range []string{"decoded WITHOUT verifying", "Issuer: +" + regexp.QuoteMeta(issuer), "Expires: .*\\(in [0-9]+m[0-9]+s\\)",
		": published in the install's JWKS", "in all namespaces", "Namespace: +" + nsA, "Name: +a\n", "Ready: +True", "Scopes: +read:invoices write:payments"} {
		if code != 0 || !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("whois of a's token lacks %s: %d\n%s%s", want, code, out, errOut)
		}
	}

	testenv.Tenant(t, env, nsA, testenv.GrantClients)
	as := []string{"--kubeconfig", kc, "--as", "tenant:" + nsA + ":" + string(testenv.GrantClients), "--as-group", "system:authenticated", "-n", nsA}
	code, out, errOut = kubectlM2M(append([]string{"whois", a.Status.ClientID}, as...)...)
	if code != 0 || !strings.Contains(out, "in namespace "+nsA+" only") || !strings.Contains(out, "Name:") {
		t.Errorf("a tenant's whois of its own client: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = kubectlM2M(append([]string{"whois", b.Status.ClientID}, as...)...)
	if code != 1 || strings.Contains(out, nsB) || !strings.Contains(errOut, "no M2MClient has client ID "+b.Status.ClientID+" in namespace "+nsA+" only") ||
		!strings.Contains(errOut, "you may not read ClientIDBindings") {
		t.Errorf("a tenant's whois of another namespace's client: %d\n%s%s", code, out, errOut)
	}
}
