package rotation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
	"github.com/m2m-dev/m2m-operator/pkg/m2mauth"
	"github.com/m2m-dev/m2m-operator/test/support/testenv"
)

// grantedScope asks for a token and returns the HTTP status and the granted scope.
func grantedScope(t *testing.T, id, secret string) (int, string) {
	t.Helper()
	resp, err := testenv.ClientCredentials(context.Background(), http.DefaultClient, issuer, id, secret)
	if err != nil {
		t.Fatal(err)
	}
	scope, _ := resp.Body["scope"].(string)
	return resp.Status, scope
}

// statusKeys reads the keys that authenticate status, as only the manager and the token server
// may.
func statusKeys(t *testing.T) *statusmac.Set {
	t.Helper()
	set, err := testenv.StatusKeys(context.Background(), env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if !set.Enforced() {
		t.Fatal("the suite's manager has not enforced authenticated status")
	}
	return set
}

// The first layer alone, with no admission policy installed (this suite installs none): a tenant
// who may write the status of its own clients (grant c) writes forged status into a client that
// no manager reconciles (its namespace is not watched), so the forgery stays as written. The
// token server still issues no token for it: not for a hash it added, not as another namespace's
// client whose ID and MACs it copied, and the real client keeps getting tokens.
func TestWithoutTheStatusPolicyForgedStatusGetsNoToken(t *testing.T) {
	ctx := context.Background()
	victimKey := create(t, rotatingClient(sharedNamespace, "forgery-victim", nil))
	victim, victimSecret := settled(t, victimKey, nil)
	victimID := victim.Status.ClientID

	ns := testenv.Namespace(t, env.Client)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantStatus)
	known := "the-tenant-knows-this-secret-0123456789abcdefgh"
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))

	// A client of the tenant's with a genuine status, as the manager would have written it.
	own := rotatingClient(ns, "own", nil)
	if err := tenant.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	base := own.DeepCopy()
	own.Status.ClientID = "m2m-tenant-own-client"
	own.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash("the-real-secret-of-the-own-client-0123456789"), CreatedAt: metav1.Now()}}
	if err := statusKeys(t).Seal(own); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Status().Patch(ctx, own, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}

	// Forgery 1: the tenant adds a hash of a secret it knows to its own client, never expiring.
	base = own.DeepCopy()
	own.Status.AcceptedSecrets = append(own.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(known), CreatedAt: metav1.Now(), ExpiresAt: &forever, MAC: own.Status.AcceptedSecrets[0].MAC})
	if err := tenant.Status().Patch(ctx, own, client.MergeFrom(base)); err != nil {
		t.Fatalf("the tenant may not write its status (the test needs grant c): %v", err)
	}
	// Forgery 1b: it adds the public key of a key pair it holds, as a generated key's entry in
	// its grace period (which any client accepts), with a copied MAC.
	tenantKey, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Issue()
	if err != nil {
		t.Fatal(err)
	}
	keyEntry, err := credentials.KeyPair{Algorithm: m2mv1alpha1.KeyAlgorithmES256}.Entry(tenantKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyEntry.ExpiresAt, keyEntry.MAC = &forever, own.Status.AcceptedSecrets[0].MAC
	base = own.DeepCopy()
	own.Status.AcceptedSecrets = append(own.Status.AcceptedSecrets, keyEntry)
	if err := tenant.Status().Patch(ctx, own, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	// Forgery 2: a second client claims the victim's ID, with the victim's MACs copied over.
	squatter := rotatingClient(ns, "squatter", nil)
	if err := tenant.Create(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	base = squatter.DeepCopy()
	squatter.Status.ClientID, squatter.Status.ClientIDMAC = victimID, victim.Status.ClientIDMAC
	squatter.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(known), CreatedAt: metav1.Now(), MAC: victim.Status.AcceptedSecrets[0].MAC}}
	if err := tenant.Status().Patch(ctx, squatter, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}

	// The token server's cache holds the forgeries once it holds a later change: a new scope
	// on the victim, which its tokens then carry (one watch stream delivers both in order).
	update(t, victimKey, func(o *m2mv1alpha1.M2MClient) { o.Spec.Scopes = append(o.Spec.Scopes, "read:marker") })
	testenv.Eventually(t, wait, func() error {
		if code, scope := grantedScope(t, victimID, victimSecret); code != 200 || !slices.Contains(strings.Fields(scope), "read:marker") {
			return fmt.Errorf("victim: %d %q", code, scope)
		}
		return nil
	})
	for sentence, creds := range map[string][2]string{
		"the hash the tenant added to its own client":        {own.Status.ClientID, known},
		"the victim's ID with the squatter's known secret":   {victimID, known},
		"the victim's ID with a secret the victim never had": {victimID, "the-real-secret-of-the-own-client-0123456789"},
	} {
		if code := tokenStatus(t, creds[0], creds[1]); code != http.StatusUnauthorized {
			t.Errorf("%s: got %d, want 401", sentence, code)
		}
	}
	if code := tokenStatus(t, victimID, victimSecret); code != 200 {
		t.Fatalf("the squatter's copy hid the real client: %d", code)
	}
	signer, _, err := jwk.ParsePrivateKeyPEM([]byte(tenantKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{own.Status.ClientID, victimID} {
		ts, err := m2mauth.NewPrivateKeyTokenSource(ctx, m2mauth.PrivateKeyClient{ClientID: id, TokenURL: issuer + "/oauth2/token", Issuer: issuer, Key: signer})
		if err != nil {
			t.Fatal(err)
		}
		var re *oauth2.RetrieveError
		if _, err := ts.Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
			t.Errorf("an assertion for %s signed with the key the tenant added: %v, want invalid_client", id, err)
		}
	}
}

// Under grant b (Kubernetes' edit: clients and Secrets, no status) the same forgeries cannot even
// be written: RBAC refuses the status write, policy or not. What grant b can do through its own
// Secrets is covered by test/manager (a prepared Secret, a wiped status with a rewritten Secret).
func TestWithoutTheStatusPolicyGrantBCannotWriteStatus(t *testing.T) {
	ctx := context.Background()
	ns := testenv.Namespace(t, env.Client)
	tenant := testenv.Tenant(t, env, ns, testenv.GrantSecrets)
	own := rotatingClient(ns, "own", nil)
	if err := tenant.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	base := own.DeepCopy()
	own.Status.ClientID = "m2m-someone-else"
	own.Status.AcceptedSecrets = []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash("the-tenant-knows-this-secret-0123456789abcdefgh"), CreatedAt: metav1.Now()}}
	if err := tenant.Status().Patch(ctx, own, client.MergeFrom(base)); !apierrors.IsForbidden(err) {
		t.Fatalf("a status write under grant b: %v, want Forbidden", err)
	}
}
