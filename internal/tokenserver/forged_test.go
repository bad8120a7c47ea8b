package tokenserver

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/internal/statusmac"
)

const attackerSecret = "attacker-knows-this-0123456789abcdefghijklmn"

func tokenFor(t *testing.T, f *fixture, id, secret string) (int, map[string]any) {
	t.Helper()
	resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", id, "client_secret", secret)})
	return resp.StatusCode, body
}

// Whoever can write status can add a hash of a secret they know. Without the manager's MAC the
// entry is ignored: no token, the same invalid_client as a wrong secret.
func TestAnEntryWithoutTheManagersMACGetsNoToken(t *testing.T) {
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	for name, forge := range map[string]func(c *m2mv1alpha1.M2MClient){
		"an added hash without MAC": func(c *m2mv1alpha1.M2MClient) {
			c.Status.AcceptedSecrets = append(c.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(attackerSecret), ExpiresAt: &forever})
		},
		"an added hash with another entry's MAC": func(c *m2mv1alpha1.M2MClient) {
			c.Status.AcceptedSecrets = append(c.Status.AcceptedSecrets, m2mv1alpha1.AcceptedSecret{Hash: credentials.Hash(attackerSecret), MAC: c.Status.AcceptedSecrets[0].MAC})
		},
		"the real entry's hash replaced": func(c *m2mv1alpha1.M2MClient) {
			c.Status.AcceptedSecrets[0].Hash = credentials.Hash(attackerSecret)
		},
	} {
		t.Run(name, func(t *testing.T) {
			victim := testClient(goodID, goodSecret)
			forge(victim)
			f := serve(t, signingkeys.ES256, mapClients{goodID: victim})
			if code, body := tokenFor(t, f, goodID, attackerSecret); code != 401 || body["error"] != ErrInvalidClient {
				t.Fatalf("the forged secret got %d %v", code, body)
			}
		})
	}
}

// A grace entry's expiry is part of its MAC: moving it to year 9999 breaks the MAC, so the
// secret is not accepted for longer than the manager said.
func TestAnExtendedGracePeriodIsNotHonoured(t *testing.T) {
	c := testClient(goodID, goodSecret)
	soon := metav1.NewTime(t0.Add(time.Minute))
	c.Status.AcceptedSecrets[0].ExpiresAt = &soon
	seal(c)
	forever := metav1.NewTime(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	c.Status.AcceptedSecrets[0].ExpiresAt = &forever
	f := serve(t, signingkeys.ES256, mapClients{goodID: c})
	if code, body := tokenFor(t, f, goodID, goodSecret); code != 401 {
		t.Fatalf("a grace entry with a forged expiry got %d %v", code, body)
	}
}

// A tenant who can write its own client's status sets status.clientID to another namespace's
// client ID, with its own secret's hash. The forged copy neither gets a token nor hides the
// real client (which, if both counted, would find no client at all).
func TestAStatusClaimingAnotherClientsIDNeitherImpersonatesNorHidesIt(t *testing.T) {
	victim := clientIn("team-b", goodID, goodSecret)
	squatter := squatterOf(victim)
	f := serve(t, signingkeys.ES256, listClients{victim, squatter})
	if code, body := tokenFor(t, f, goodID, attackerSecret); code != 401 {
		t.Fatalf("the squatter got %d %v", code, body)
	}
	if code, body := tokenFor(t, f, goodID, goodSecret); code != 200 {
		t.Fatalf("the real client got %d %v", code, body)
	}
}

// clientIn is the test client id of namespace ns, sealed.
func clientIn(ns, id, secret string) *m2mv1alpha1.M2MClient {
	c := testClient(id, secret)
	c.Namespace = ns
	return seal(c)
}

// squatterOf is a client of team-a, with attackerSecret, whose status someone who may write
// status set to victim's client ID, even copying its MAC.
func squatterOf(victim *m2mv1alpha1.M2MClient) *m2mv1alpha1.M2MClient {
	squatter := clientIn("team-a", "m2m-squatter", attackerSecret)
	squatter.Status.ClientID = victim.Status.ClientID
	squatter.Status.ClientIDMAC = victim.Status.ClientIDMAC
	return squatter
}

// Upgrading from a version without MACs: until the manager has authenticated every status and
// says so in the signing-key Secret, entries without a MAC are accepted, so that no pod holding
// its current secret is refused; once it says so, they are not.
func TestEntriesWithoutMACAreAcceptedOnlyUntilEnforcement(t *testing.T) {
	legacy := &m2mv1alpha1.M2MClient{
		Spec:   m2mv1alpha1.M2MClientSpec{Scopes: []m2mv1alpha1.Scope{"read:invoices"}},
		Status: m2mv1alpha1.M2MClientStatus{ClientID: goodID, AcceptedSecrets: []m2mv1alpha1.AcceptedSecret{{Hash: credentials.Hash(goodSecret)}}},
	}
	key, err := signingkeys.Generate(signingkeys.ES256, signingkeys.StateActive, t0)
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := statusmac.Generate(statusmac.StateActive, t0)
	for _, tc := range []struct {
		name   string
		status *statusmac.Set
		want   int
	}{
		{"no status keys yet (the previous manager still runs)", nil, 200},
		{"status keys, not enforced yet", &statusmac.Set{Keys: []*statusmac.Key{sk}}, 200},
		{"enforced", &statusmac.Set{Keys: []*statusmac.Key{sk}, EnforcedSince: &t0}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := NewStaticKeys(&signingkeys.Set{Keys: []*signingkeys.Key{key}}, tc.status, t0)
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: legacy}, Keys: keys, Clock: clocktesting.NewFakeClock(t0)})
			if err != nil {
				t.Fatal(err)
			}
			f := &fixture{srv: newTestServer(t, s)}
			if code, body := tokenFor(t, f, goodID, goodSecret); code != tc.want {
				t.Fatalf("got %d %v, want %d", code, body, tc.want)
			}
		})
	}
}

func newTestServer(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// A client that takes no secret (spec.authentication.clientSecret false) accepts a secret only in
// its grace period, even before the manager has expired it.
func TestAClientThatTakesNoSecretAcceptsOnlySecretsInTheirGracePeriod(t *testing.T) {
	off := false
	unexpiring := testClient(goodID, goodSecret)
	unexpiring.Spec.Authentication.ClientSecret = &off
	seal(unexpiring)
	f := serve(t, signingkeys.ES256, mapClients{goodID: unexpiring})
	if code, body := tokenFor(t, f, goodID, goodSecret); code != 401 {
		t.Fatalf("an unexpiring secret of a client that takes none: %d %v", code, body)
	}
	grace := testClient(goodID, goodSecret)
	grace.Spec.Authentication.ClientSecret = &off
	soon := metav1.NewTime(t0.Add(time.Hour))
	grace.Status.AcceptedSecrets[0].ExpiresAt = &soon
	seal(grace)
	f = serve(t, signingkeys.ES256, mapClients{goodID: grace})
	if code, body := tokenFor(t, f, goodID, goodSecret); code != 200 {
		t.Fatalf("a secret in its grace period: %d %v", code, body)
	}
}

// fakeServiceAccounts says every assertion is a token of team-b's worker, from issuer.
type fakeServiceAccounts struct{ issuer string }

func (f fakeServiceAccounts) Verify(context.Context, string, []string) (string, string, error) {
	return "team-b", "worker", nil
}
func (f fakeServiceAccounts) Issuer() string { return f.issuer }

// An administrator who also lists the cluster's own ServiceAccount issuer as federated does not
// let a client of team-a name team-b's ServiceAccount as a federated subject: the cluster's tokens
// always take the ServiceAccount path, which checks the namespace.
func TestTheClustersOwnTokensNeverTakeTheFederatedPath(t *testing.T) {
	s, assertion := ownIssuerListedAsFederated(t)
	f := &fixture{srv: newTestServer(t, s)}
	resp, body := f.do(t, call{contentType: form, body: formBody("grant_type", "client_credentials", "client_id", goodID,
		"client_assertion_type", JWTBearerAssertion, "client_assertion", assertion)})
	if resp.StatusCode != 401 {
		t.Fatalf("team-b's ServiceAccount acted as team-a's client: %d %v", resp.StatusCode, body)
	}
}
