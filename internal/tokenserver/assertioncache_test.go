package tokenserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// Each test below is one rule of the assertion cache: a cached assertion gets the answer a full
// verification would give at that moment, and one tenant cannot take another's share. A full
// verification shows as a signature check (issuerKeys.signatureChecks).

// clusterWithKey is the cluster's ServiceAccount verifier with key loaded as its only key, as if
// read from the API server, on a fake clock at t0; reading the keys again fails and keeps them.
func clusterWithKey(t testing.TB, key *signingkeys.Key) (*ClusterServiceAccounts, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	sa := newClusterServiceAccounts(clk, func(context.Context) (string, jwk.Set, error) {
		return "", jwk.Set{}, errors.New("the API server is away")
	})
	sa.keys.issuer, sa.keys.lastAttempt = ownIssuer, t0
	sa.keys.keys[key.KID] = assertionKey{key: key.Signer().Public(), alg: string(key.Algorithm)}
	return sa, clk
}

// saToken is a ServiceAccount token of ns's worker for this server, valid 10 minutes from t0,
// with claims added or replaced by extra.
func saToken(t testing.TB, key *signingkeys.Key, ns string, extra jwt.MapClaims) string {
	claims := jwt.MapClaims{"iss": ownIssuer, "sub": "system:serviceaccount:" + ns + ":worker", "aud": testIssuer, "iat": t0.Unix(), "exp": t0.Add(10 * time.Minute).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	return signed(t, key, claims)
}

// verifyWant verifies token for audiences and fails unless it is accepted as want says, after
// wantChecks signature checks in all.
func verifyWant(t *testing.T, sa *ClusterServiceAccounts, token string, audiences []string, want bool, wantChecks int64) {
	t.Helper()
	ns, name, err := sa.Verify(context.Background(), token, audiences)
	if (err == nil) != want {
		t.Fatalf("accepted: %v (%s/%s, %v), want %v", err == nil, ns, name, err, want)
	}
	if got := sa.keys.signatureChecks.Load(); got != wantChecks {
		t.Fatalf("%d signature checks, want %d", got, wantChecks)
	}
}

var forUs = []string{testIssuer}

func TestARePresentedAssertionIsAnsweredWithoutASecondSignatureCheck(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, token, forUs, true, 1)
	ns, name, err := sa.Verify(context.Background(), token, forUs)
	if err != nil || ns != "team-a" || name != "worker" || sa.keys.signatureChecks.Load() != 1 {
		t.Fatalf("the second time: %s/%s, %v after %d signature checks, want team-a/worker after 1", ns, name, err, sa.keys.signatureChecks.Load())
	}
}

func TestACachedAssertionIsRefusedOnceItHasExpired(t *testing.T) {
	key := newKey(t)
	sa, clk := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, token, forUs, true, 1)
	clk.SetTime(t0.Add(10*time.Minute + assertionLeeway - time.Second))
	verifyWant(t, sa, token, forUs, true, 1)
	clk.SetTime(t0.Add(10*time.Minute + assertionLeeway))
	verifyWant(t, sa, token, forUs, false, 2)
}

// The clock of a server can be set back; a cached assertion is then as valid as a verified one.
func TestACachedAssertionIsRefusedBeforeItsNotBefore(t *testing.T) {
	key := newKey(t)
	sa, clk := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", jwt.MapClaims{"nbf": t0.Add(time.Minute).Unix()})
	clk.SetTime(t0.Add(time.Minute))
	verifyWant(t, sa, token, forUs, true, 1)
	clk.SetTime(t0.Add(time.Minute - assertionLeeway - time.Second))
	verifyWant(t, sa, token, forUs, false, 2)
}

// An entry keeps only the audiences it was verified for: asked for another of the token's, it is
// verified in full, and asked for one the token lacks, refused.
func TestACachedAssertionIsRefusedForAnAudienceNotAskedFor(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", jwt.MapClaims{"aud": []string{testIssuer, "https://elsewhere.example"}})
	verifyWant(t, sa, token, forUs, true, 1)
	verifyWant(t, sa, token, forUs, true, 1)
	verifyWant(t, sa, token, []string{"https://elsewhere.example"}, true, 2)
	verifyWant(t, sa, token, []string{"https://other.example"}, false, 3)
}

// The attacker's test: what a tenant puts in its tokens does not decide what the cache holds for
// them. The values of aud that the server did not ask for are not kept, and a token padded past
// maxCachedAssertion is verified each time instead of kept.
func TestATokenPaddedToWeighOnTheCacheIsNotKeptWhole(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	padding := make([]string, 200)
	for i := range padding {
		padding[i] = fmt.Sprintf("https://padding-%03d.example/%s", i, strings.Repeat("x", 20))
	}
	padded := saToken(t, key, "team-a", jwt.MapClaims{"aud": append([]string{testIssuer}, padding...)})
	if len(padded) <= maxCachedAssertion {
		t.Fatalf("the padded token is %d bytes, want over %d", len(padded), maxCachedAssertion)
	}
	verifyWant(t, sa, padded, forUs, true, 1)
	verifyWant(t, sa, padded, forUs, true, 2)
	if got := sa.keys.cache.len(); got != 0 {
		t.Fatalf("%d entries, want none for a token over %d bytes", got, maxCachedAssertion)
	}
	some := saToken(t, key, "team-a", jwt.MapClaims{"aud": append([]string{testIssuer}, padding[:20]...)})
	verifyWant(t, sa, some, forUs, true, 3)
	v, ok := sa.keys.cache.get(hashAssertion(some))
	if !ok || !slices.Equal(v.aud, []string{testIssuer}) {
		t.Fatalf("the entry keeps aud %q (cached %v), want only the audience asked for", v.aud, ok)
	}
}

func TestACachedAssertionIsRefusedOnceItsKeyIsWithdrawnOrReplaced(t *testing.T) {
	for sentence, change := range map[string]func(k *issuerKeys, kid string){
		"withdrawn": func(k *issuerKeys, kid string) { k.keys = map[string]assertionKey{"another": k.keys[kid]} },
		"replaced under the same kid": func(k *issuerKeys, kid string) {
			other := newKey(t)
			k.keys = map[string]assertionKey{kid: {key: other.Signer().Public(), alg: "ES256"}}
		},
		"the same key announced for another algorithm": func(k *issuerKeys, kid string) {
			k.keys = map[string]assertionKey{kid: {key: k.keys[kid].key, alg: "RS256"}}
		},
	} {
		t.Run(sentence, func(t *testing.T) {
			key := newKey(t)
			sa, _ := clusterWithKey(t, key)
			token := saToken(t, key, "team-a", nil)
			verifyWant(t, sa, token, forUs, true, 1)
			change(sa.keys, key.KID)
			verifyWant(t, sa, token, forUs, false, 2)
			if sa.keys.cache.len() != 0 {
				t.Fatal("the refused assertion stays cached")
			}
		})
	}
}

func TestACachedAssertionIsKeptWhenTheKeysAreReadAgainUnchanged(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, token, forUs, true, 1)
	pub, err := key.PublicJWK().PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	sa.keys.keys = map[string]assertionKey{key.KID: {key: pub, alg: "ES256"}}
	verifyWant(t, sa, token, forUs, true, 1)
}

func TestACachedAssertionIsRefusedOnceTheClusterNamesAnotherIssuer(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, token, forUs, true, 1)
	sa.keys.issuer = "https://new-issuer.example"
	verifyWant(t, sa, token, forUs, false, 2)
}

// The cache is keyed by the whole assertion: the same claims with a signature of their own (an
// ECDSA signature differs each time) are verified on their own, and a forged signature is
// refused.
func TestAnotherTokenWithTheSameClaimsIsNotAnsweredFromTheCache(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, token, forUs, true, 1)
	again := saToken(t, key, "team-a", nil)
	if again == token {
		t.Fatal("two signatures of the same claims are the same, so the test could not fail")
	}
	verifyWant(t, sa, again, forUs, true, 2)
	dot := strings.LastIndex(token, ".")
	forged := token[:dot+1] + strings.Repeat("A", len(token)-dot-1)
	verifyWant(t, sa, forged, forUs, false, 3)
}

// Every check of a full verification precedes the cache: here the lifetime check, which comes
// after the signature.
func TestAnAssertionAFullVerificationRefusedIsVerifiedAndRefusedAgainWhenRePresented(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", jwt.MapClaims{"exp": t0.Add(MaxAssertionLifetime + time.Hour).Unix()})
	verifyWant(t, sa, token, forUs, false, 1)
	verifyWant(t, sa, token, forUs, false, 2)
	if sa.keys.cache.len() != 0 {
		t.Fatal("a refused assertion is cached")
	}
}

// The attacker's test: a tenant with rights in its own namespace only has valid tokens made for
// its own ServiceAccounts, as many as it likes, and presents each.
func TestOneNamespaceFloodingTheCacheEvictsOnlyItsOwnEntries(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	sa.keys.cache = newAssertionCache(4, 6)
	victim := saToken(t, key, "team-a", nil)
	verifyWant(t, sa, victim, forUs, true, 1)
	for i := range 50 {
		flood := saToken(t, key, "team-b", jwt.MapClaims{"jti": fmt.Sprint(i)})
		verifyWant(t, sa, flood, forUs, true, int64(2+i))
	}
	verifyWant(t, sa, victim, forUs, true, 51)
	if got := sa.keys.cache.partitionLen("team-b"); got != 4 {
		t.Fatalf("the flooding namespace holds %d entries, want its share of 4", got)
	}
}

// Namespaces that filled the whole cache first do not keep a new one out: the newcomer takes the
// place of the oldest entry of a namespace over its share, and expired entries go at a sweep.
func TestWhenTheCacheIsFullANewNamespaceTakesThePlaceOfANamespaceOverItsShare(t *testing.T) {
	key := newKey(t)
	sa, clk := clusterWithKey(t, key)
	sa.keys.cache = newAssertionCache(2, 4)
	checks := int64(0)
	for i := range 4 {
		checks++
		verifyWant(t, sa, saToken(t, key, fmt.Sprintf("team-%d", i/2), jwt.MapClaims{"exp": t0.Add(time.Minute).Unix()}), forUs, true, checks)
	}
	late := saToken(t, key, "team-late", nil)
	verifyWant(t, sa, late, forUs, true, 5)
	verifyWant(t, sa, late, forUs, true, 5)
	if got, a, b := sa.keys.cache.len(), sa.keys.cache.partitionLen("team-0"), sa.keys.cache.partitionLen("team-1"); got != 4 || a+b != 3 {
		t.Fatalf("%d entries, %d and %d of the first namespaces; want 4, one of theirs given up", got, a, b)
	}
	clk.SetTime(t0.Add(time.Minute + assertionLeeway))
	sa.keys.cache.sweep(clk.Now())
	verifyWant(t, sa, late, forUs, true, 5)
	if got := sa.keys.cache.len(); got != 1 {
		t.Fatalf("%d entries after the sweep, want the new namespace's one", got)
	}
}

// The cache answers before any client is looked up, so the client's checks run on every request
// as before, and a refusal after a cached verification is the refusal of an unknown client.
func TestACachedServiceAccountAssertionIsCheckedAgainstTheClientOnEveryRequest(t *testing.T) {
	key := newKey(t)
	sa, _ := clusterWithKey(t, key)
	token := saToken(t, key, "team-a", nil)
	disabled := workloadClient("team-a", "worker")
	disabled.Spec.Disabled = true
	seal(disabled)
	form := func(clientID string) []string {
		return []string{"client_id", clientID, "client_assertion_type", JWTBearerAssertion, "client_assertion", token}
	}
	s := authServer(t, mapClients{goodID: workloadClient("team-a", "worker")}, sa, nil)
	if _, bad := authenticateForm(t, s, form(goodID)...); bad != nil || sa.keys.signatureChecks.Load() != 1 {
		t.Fatalf("the allowed client: %v after %d signature checks", bad, sa.keys.signatureChecks.Load())
	}
	_, unknown := authenticateForm(t, s, form("m2m-nobody")...)
	wantReason(t, unknown, "unknown_client")
	for sentence, tc := range map[string]struct {
		client *m2mv1alpha1.M2MClient
		reason string
	}{
		"a disabled client":                        {disabled, "disabled"},
		"a client of another namespace":            {workloadClient("team-b", "worker"), "service_account_not_allowed"},
		"a client allowing another ServiceAccount": {workloadClient("team-a", "builder"), "service_account_not_allowed"},
	} {
		t.Run(sentence, func(t *testing.T) {
			s := authServer(t, mapClients{goodID: tc.client}, sa, nil)
			_, bad := authenticateForm(t, s, form(goodID)...)
			wantReason(t, bad, tc.reason)
			if *bad != (oauthError{Code: unknown.Code, Description: unknown.Description, status: unknown.status, reason: bad.reason}) {
				t.Fatalf("answered %+v, an unknown client %+v", bad, unknown)
			}
		})
	}
	if got := sa.keys.signatureChecks.Load(); got != 1 {
		t.Fatalf("%d signature checks, want the first one only", got)
	}
}

func TestOneFederatedSubjectFloodingTheCacheEvictsOnlyItsOwnEntries(t *testing.T) {
	key := newKey(t)
	fed := loadedFederation(t, key, ciIssuer)
	k := fed.issuers[ciIssuer]
	k.cache = newAssertionCache(2, 4)
	verify := func(token string, wantChecks int64) {
		t.Helper()
		if _, err := fed.Verify(context.Background(), ciIssuer, token, forUs); err != nil || k.signatureChecks.Load() != wantChecks {
			t.Fatalf("%v after %d signature checks, want acceptance after %d", err, k.signatureChecks.Load(), wantChecks)
		}
	}
	victim := workloadToken(t, key, ciIssuer, "repo:payments")
	verify(victim, 1)
	for i := range 10 {
		verify(signed(t, key, jwt.MapClaims{"iss": ciIssuer, "sub": "repo:flood", "aud": testIssuer, "iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(), "jti": fmt.Sprint(i)}), int64(2+i))
	}
	verify(victim, 11)
	if got := k.cache.partitionLen("repo:flood"); got != 2 {
		t.Fatalf("the flooding subject holds %d entries, want its share of 2", got)
	}
}

// BenchmarkTokenEndpointWithARepeatedServiceAccountAssertion is BenchmarkTokenEndpoint with the
// same ServiceAccount token (RS256, 2048-bit, as the API server makes them) as the credential of
// every request: a pod re-presenting its projected token. Its sub-benchmarks compare it with a
// client secret (BenchmarkTokenEndpoint's request) and with the assertion verified on every
// request, as before the cache. cpu-ns/op is the process's CPU time per request, which another
// process sharing the cores changes less than the wall time per request.
func BenchmarkTokenEndpointWithARepeatedServiceAccountAssertion(b *testing.B) {
	key, err := signingkeys.Generate(signingkeys.RS256, signingkeys.StateActive, t0)
	if err != nil {
		b.Fatal(err)
	}
	assertion := func() []string {
		return []string{"grant_type", "client_credentials", "client_id", goodID, "client_assertion_type", JWTBearerAssertion,
			"client_assertion", saToken(b, key, "team-a", nil), "scope", "read:invoices write:payments", "audience", "https://payments.example.com"}
	}
	for _, run := range []struct {
		name   string
		cached bool
		form   []string
	}{
		{"client secret", true, tokenForm},
		{"ServiceAccount token, cached", true, assertion()},
		{"ServiceAccount token, verified each time", false, assertion()},
	} {
		b.Run(run.name, func(b *testing.B) {
			sa, clk := clusterWithKey(b, key)
			if !run.cached {
				sa.keys.partition = func(string) (string, bool) { return "", false }
			}
			c := workloadClient("team-a", "worker")
			_, keys := staticKeys(b, signingkeys.ES256)
			s, err := New(Config{IssuerURL: testIssuer, Clients: mapClients{goodID: c}, Keys: keys, Clock: clk, ServiceAccounts: sa})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			body := formBody(run.form...)
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
					r.Header.Set("Content-Type", form)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatal(w.Code, w.Body.String())
					}
				}
			})
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}
