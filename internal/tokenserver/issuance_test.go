package tokenserver

import (
	"crypto"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

func TestTheIssuanceLimitDecidesEachRequestByItsClientsBucket(t *testing.T) {
	perSecond := IssuanceLimit{PerMinute: 60, Burst: 5}
	for sentence, tc := range map[string]struct {
		limit      IssuanceLimit
		bucket     *bucket
		now        time.Time
		wantOver   bool
		wantWait   time.Duration
		wantTokens float64
	}{
		"a client without a bucket gets a token from a full one":        {perSecond, nil, t0, false, 0, 4},
		"the last token is given":                                       {perSecond, &bucket{1, t0}, t0, false, 0, 0},
		"an empty bucket refuses until it holds a token":                {perSecond, &bucket{0, t0}, t0, true, time.Second, 0},
		"a bucket half-way to a token waits for the other half":         {perSecond, &bucket{0.5, t0}, t0, true, 500 * time.Millisecond, 0.5},
		"a bucket refills at the rate a minute":                         {perSecond, &bucket{0, t0}, t0.Add(time.Second), false, 0, 0},
		"refilling stops at the burst":                                  {perSecond, &bucket{0, t0}, t0.Add(time.Hour), false, 0, 4},
		"a burst lowered since caps what the bucket kept":               {IssuanceLimit{PerMinute: 60, Burst: 2}, &bucket{5, t0}, t0, false, 0, 1},
		"a clock before the bucket's time refills nothing":              {perSecond, &bucket{0, t0}, t0.Add(-time.Hour), true, time.Second, 0},
		"a rate under one a second says a wait of minutes":              {IssuanceLimit{PerMinute: 1, Burst: 1}, &bucket{0, t0}, t0, true, time.Minute, 0},
		"the wait is bounded whatever the rate":                         {IssuanceLimit{PerMinute: 1, Burst: 1}, &bucket{-1e6, t0}, t0, true, maxRetryAfter, -1e6},
		"the default limit gives a hundred at once, then ten a second":  {DefaultIssuanceLimit, &bucket{0, t0}, t0, true, 100 * time.Millisecond, 0},
		"the default limit's bucket is full again ten seconds after it": {DefaultIssuanceLimit, &bucket{0, t0}, t0.Add(10 * time.Second), false, 0, 99},
	} {
		t.Run(sentence, func(t *testing.T) {
			after, wait, over := tc.limit.take(tc.bucket, tc.now)
			if over != tc.wantOver || wait != tc.wantWait {
				t.Fatalf("over %v, wait %s; want over %v, wait %s", over, wait, tc.wantOver, tc.wantWait)
			}
			if got := after.tokensAt(after.at, 0, 1<<30); got != tc.wantTokens {
				t.Fatalf("the bucket holds %v tokens after, want %v", got, tc.wantTokens)
			}
		})
	}
}

func TestAClientsSpecOverridesTheServersIssuanceLimit(t *testing.T) {
	server := IssuanceLimit{PerMinute: 600, Burst: 100}
	for sentence, tc := range map[string]struct {
		override *m2mv1alpha1.IssuanceLimit
		want     IssuanceLimit
	}{
		"a client without an override has the server's limit": {nil, server},
		"an override replaces both numbers":                   {&m2mv1alpha1.IssuanceLimit{PerMinute: 6, Burst: 2}, IssuanceLimit{PerMinute: 6, Burst: 2}},
		"an override may be above the server's limit":         {&m2mv1alpha1.IssuanceLimit{PerMinute: 60000, Burst: 1000}, IssuanceLimit{PerMinute: 60000, Burst: 1000}},
		"a rate the CRD refuses is not read as no limit":      {&m2mv1alpha1.IssuanceLimit{PerMinute: 0, Burst: 2}, server},
		"a burst the CRD refuses is not read as no limit":     {&m2mv1alpha1.IssuanceLimit{PerMinute: 6, Burst: -1}, server},
	} {
		t.Run(sentence, func(t *testing.T) {
			c := testClient(goodID, goodSecret)
			c.Spec.IssuanceLimit = tc.override
			if got := server.of(NewCachedClient(c)); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

const (
	otherID     = "m2m-other"
	otherSecret = "other-secret-0123456789abcdefghijklmnopqrstu"
)

// tokenOf asks for a token with id and secret, and form's other pairs, from one address.
func (l *limited) tokenOf(id, secret string, kv ...string) *httptest.ResponseRecorder {
	form := url.Values{"grant_type": {GrantClientCredentials}, "client_id": {id}, "client_secret": {secret}}
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	return l.post("203.0.113.9:1000", "/oauth2/token", form)
}

// expectOf asks n times for a token of id and fails unless each answer has status want.
func (l *limited) expectOf(t *testing.T, what, id, secret string, n, want int) {
	t.Helper()
	for i := range n {
		if w := l.tokenOf(id, secret); w.Code != want {
			t.Fatalf("%s, request %d: got %d %s, want %d", what, i+1, w.Code, w.Body, want)
		}
	}
}

// issuing is a server with the issuance limit and two clients, goodID and otherID, of which
// good may carry an override.
func issuing(t *testing.T, limit IssuanceLimit, override *m2mv1alpha1.IssuanceLimit) *limited {
	t.Helper()
	good := testClient(goodID, goodSecret)
	good.Spec.IssuanceLimit = override
	return newLimitedServer(t, Config{IssuanceLimit: limit, Clients: mapClients{goodID: good, otherID: testClient(otherID, otherSecret)}})
}

// A client over its limit gets 429 with Retry-After, no-store and an OAuth error, counted under
// client_limited in its namespace, while another client keeps getting tokens; it is served
// again once its bucket holds a token.
func TestAClientOverItsIssuanceLimitGets429WhileAnotherClientKeepsGettingTokens(t *testing.T) {
	l := issuing(t, IssuanceLimit{PerMinute: 30, Burst: 3}, nil)
	l.expectOf(t, "the burst", goodID, goodSecret, 3, http.StatusOK)
	want429(t, l.tokenOf(goodID, goodSecret), "2", "one token at 30 a minute")
	l.expectOf(t, "another client", otherID, otherSecret, 3, http.StatusOK)
	if got := testutil.ToFloat64(l.s.metrics.failures.WithLabelValues(reasonClientLimited.name, "ns")); got != 1 {
		t.Errorf("m2m_token_failures_total{reason=%q,namespace=ns} = %v, want 1", reasonClientLimited.name, got)
	}
	if recs, _ := l.s.refusals.recall(types.NamespacedName{Namespace: "ns", Name: goodID}); len(recs) != 1 || recs[0].reason != reasonClientLimited {
		t.Errorf("the client's refusals are %+v, want one client_limited for kubectl m2m why", recs)
	}
	if got := gauge(t, l, "m2m_issuance_limit_clients"); got != 2 {
		t.Errorf("m2m_issuance_limit_clients = %v, want 2", got)
	}
	l.clock.Step(time.Second)
	l.expectOf(t, "half-way to a token", goodID, goodSecret, 1, http.StatusTooManyRequests)
	l.clock.Step(time.Second)
	l.expectOf(t, "after Retry-After", goodID, goodSecret, 1, http.StatusOK)
	l.expectOf(t, "with the bucket empty again", goodID, goodSecret, 1, http.StatusTooManyRequests)
}

// Attacker test: client IDs are not secret, so a wrong secret, however many, never takes from
// the client's bucket; and a wrong secret for a client over its limit gets the very answer
// that an unknown client ID gets, never a 429 that would tell the ID exists.
func TestAWrongSecretNeverTouchesTheClientsBucketNorTellsThatItIsOverItsLimit(t *testing.T) {
	l := issuing(t, IssuanceLimit{PerMinute: 1, Burst: 2}, nil)
	unknown := l.tokenOf("m2m-nobody", wrongSecret)
	for i := range 50 {
		if w := l.tokenOf(goodID, wrongSecret); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong secret %d: got %d %s, want 401", i+1, w.Code, w.Body)
		}
	}
	l.expectOf(t, "the owner, after 50 wrong secrets", goodID, goodSecret, 2, http.StatusOK)
	l.expectOf(t, "the owner over its limit", goodID, goodSecret, 1, http.StatusTooManyRequests)
	w := l.tokenOf(goodID, wrongSecret)
	if w.Code != unknown.Code || w.Body.String() != unknown.Body.String() || w.Header().Get("Retry-After") != "" {
		t.Fatalf("a wrong secret for a client over its limit got %d %s (Retry-After %q); an unknown client gets %d %s",
			w.Code, w.Body, w.Header().Get("Retry-After"), unknown.Code, unknown.Body)
	}
}

// A client's spec.issuanceLimit is its limit instead of the server's, in both numbers, and
// the other client keeps the server's.
func TestTheSpecOverrideIsTheClientsLimit(t *testing.T) {
	l := issuing(t, IssuanceLimit{PerMinute: 600, Burst: 2}, &m2mv1alpha1.IssuanceLimit{PerMinute: 6, Burst: 5})
	l.expectOf(t, "the override's burst", goodID, goodSecret, 5, http.StatusOK)
	w := l.tokenOf(goodID, goodSecret)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "10" {
		t.Fatalf("over the override: got %d, Retry-After %q; want 429 and 10 (6 a minute)", w.Code, w.Header().Get("Retry-After"))
	}
	l.expectOf(t, "the server's burst", otherID, otherSecret, 2, http.StatusOK)
	l.expectOf(t, "over the server's burst", otherID, otherSecret, 1, http.StatusTooManyRequests)
}

// Every token request the client authenticates takes a token, whether it gets one or is
// refused for its scope: a client that floods bad requests is limited as one that floods good
// ones.
func TestATokenRequestRefusedAfterAuthenticationTakesFromTheBucketToo(t *testing.T) {
	l := issuing(t, IssuanceLimit{PerMinute: 1, Burst: 3}, nil)
	for range 3 {
		if w := l.tokenOf(goodID, goodSecret, "scope", "admin:everything"); w.Code != http.StatusBadRequest {
			t.Fatalf("a scope the client may not have: got %d %s, want 400", w.Code, w.Body)
		}
	}
	l.expectOf(t, "after three refused scopes", goodID, goodSecret, 1, http.StatusTooManyRequests)
}

// Introspection is not issuance: a resource server may introspect every call it serves, so it
// takes nothing from the bucket of the client it authenticates as.
func TestIntrospectionTakesNothingFromTheBucket(t *testing.T) {
	l := issuing(t, IssuanceLimit{PerMinute: 1, Burst: 1}, nil)
	w := l.tokenOf(goodID, goodSecret)
	var tok tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("got %d %s, want a token", w.Code, w.Body)
	}
	for i := range 20 {
		form := url.Values{"token": {tok.AccessToken}, "client_id": {otherID}, "client_secret": {otherSecret}}
		if w := l.post("203.0.113.9:1000", "/oauth2/introspect", form); w.Code != http.StatusOK {
			t.Fatalf("introspection %d: got %d %s, want 200", i+1, w.Code, w.Body)
		}
	}
	l.expectOf(t, "the introspecting client's first token", otherID, otherSecret, 1, http.StatusOK)
}

// A 429 of the issuance limit is not a failed authentication: a client over its limit does not
// bring the source limit down on its address, where other clients keep being served.
func TestAClientOverItsIssuanceLimitDoesNotCountAgainstItsSource(t *testing.T) {
	l := newLimitedServer(t, Config{
		FailureLimit:  FailureLimit{Rate: 1, Burst: 2},
		IssuanceLimit: IssuanceLimit{PerMinute: 1, Burst: 1},
		Clients:       mapClients{goodID: testClient(goodID, goodSecret), otherID: testClient(otherID, otherSecret)},
	})
	l.expectOf(t, "the burst", goodID, goodSecret, 1, http.StatusOK)
	l.expectOf(t, "over the limit", goodID, goodSecret, 20, http.StatusTooManyRequests)
	l.expectOf(t, "another client from the same address", otherID, otherSecret, 1, http.StatusOK)
}

// A server without the limit (a zero IssuanceLimit, or --issuance-per-minute=0) limits no
// client, not even one whose spec asks for a tight limit.
func TestAZeroIssuanceLimitLimitsNothingNotEvenOverrides(t *testing.T) {
	l := issuing(t, IssuanceLimit{}, &m2mv1alpha1.IssuanceLimit{PerMinute: 1, Burst: 1})
	l.expectOf(t, "with the limit off", goodID, goodSecret, 50, http.StatusOK)
	if got := gauge(t, l, "m2m_issuance_limit_clients"); got != -1 {
		t.Fatalf("a server without the limit exports m2m_issuance_limit_clients = %v", got)
	}
}

// gauge is the value of the gauge name in l's registry, -1 when it has none.
func gauge(t *testing.T, l *limited, name string) float64 {
	t.Helper()
	mfs, err := l.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// liveClients are the clients a cache holds, by UID, for the limiter's look for deleted ones.
type liveClients map[types.UID]bool

func (liveClients) Candidates(string) []*CachedClient { return nil }

func (c liveClients) Present(_ types.NamespacedName, uid types.UID) bool { return c[uid] }

func churnClient(i int) *CachedClient {
	c := testClient(fmt.Sprintf("m2m-churn-%d", i), "unused")
	c.UID = types.UID(fmt.Sprintf("uid-churn-%d", i))
	return NewCachedClient(c)
}

// Exhaustion: clients created and deleted without end (a tenant's script, or a SaaS that makes
// a client per customer) leave no buckets behind. With a thousand clients alive at a time, the
// table never holds more than twice that, however many have come and gone, even at one instant,
// where no bucket has refilled.
func TestTheBucketsOfDeletedClientsAreDroppedSoTheTableStaysWithinTwiceTheLiveClients(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	live := liveClients{}
	l := newIssuanceLimiter(IssuanceLimit{PerMinute: 60, Burst: 10}, clk, live)
	const alive, rounds = 1000, 20
	for round := range rounds {
		for i := round * alive; i < (round+1)*alive; i++ {
			c := churnClient(i)
			live[c.UID] = true
			if _, over := l.take(c); over {
				t.Fatalf("client %d, new, was refused", i)
			}
			if n := l.size(); n > 2*alive+1 {
				t.Fatalf("after %d clients, %d alive, the table holds %d buckets", i+1, alive, n)
			}
		}
		for i := round * alive; i < (round+1)*alive; i++ {
			delete(live, churnClient(i).UID)
		}
	}
}

// Buckets that have refilled are the same as none and go when the table grows, without a
// presence check (an embedded server whose ClientSource cannot say which clients exist).
func TestRefilledBucketsAreDroppedWhenTheTableGrows(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	l := newIssuanceLimiter(IssuanceLimit{PerMinute: 60, Burst: 10}, clk, mapClients{})
	for i := range 2000 {
		l.take(churnClient(i))
	}
	clk.Step(10 * time.Second) // every bucket is full again
	for i := 2000; i < 4000; i++ {
		l.take(churnClient(i))
	}
	if n := l.size(); n > 2000 {
		t.Fatalf("the table holds %d buckets; the 2,000 that refilled should have gone", n)
	}
}

// Attacker test: many clients asking at once (a tenant who made thousands) never push out the
// bucket of a client over its limit, which is neither refilled nor deleted: it stays refused.
func TestAFloodOfOtherClientsDoesNotResetAClientOverItsLimit(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	live := liveClients{}
	l := newIssuanceLimiter(IssuanceLimit{PerMinute: 60, Burst: 3}, clk, live)
	offender := NewCachedClient(testClient(goodID, goodSecret))
	live[offender.UID] = true
	for range 3 {
		l.take(offender)
	}
	for i := range 10000 {
		c := churnClient(i)
		live[c.UID] = i%2 == 0 // half of them deleted at once
		l.take(c)
		if _, over := l.take(offender); !over {
			t.Fatalf("after %d other clients the offender was served", i+1)
		}
	}
}

// A client deleted and created again under its name is another object (another UID): it starts
// with a full bucket, as any new client does.
func TestAClientCreatedAgainUnderItsNameStartsWithAFullBucket(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	l := newIssuanceLimiter(IssuanceLimit{PerMinute: 1, Burst: 2}, clk, mapClients{})
	old := NewCachedClient(testClient(goodID, goodSecret))
	for range 2 {
		l.take(old)
	}
	if _, over := l.take(old); !over {
		t.Fatal("the old client was not over its limit")
	}
	recreated := testClient(goodID, goodSecret)
	recreated.UID = "uid-created-again"
	again := NewCachedClient(recreated)
	for i := range 2 {
		if _, over := l.take(again); over {
			t.Fatalf("the client created again was refused its token %d", i+1)
		}
	}
}

// The issuance limit's flags: on by default with the documented values, off with a rate of 0;
// values that cannot work are refused.
func TestTheIssuanceLimitIsOnByDefaultAndFlagsThatCannotWorkAreRefused(t *testing.T) {
	for sentence, tc := range map[string]struct {
		args  []string
		limit IssuanceLimit
		ok    bool
	}{
		"by default the limit is on, 600 a minute and 100 at once": {nil, IssuanceLimit{PerMinute: 600, Burst: 100}, true},
		"a rate of 0 turns the limit off":                          {[]string{"--issuance-per-minute=0"}, IssuanceLimit{Burst: DefaultIssuanceBurst}, true},
		"both numbers are set":                                     {[]string{"--issuance-per-minute=60", "--issuance-burst=5"}, IssuanceLimit{PerMinute: 60, Burst: 5}, true},
		"a negative rate is refused":                               {[]string{"--issuance-per-minute=-1"}, IssuanceLimit{}, false},
		"a burst of 0, which would refuse everyone, is refused":    {[]string{"--issuance-burst=0"}, IssuanceLimit{}, false},
		"a fraction is refused: the unit is a minute for that":     {[]string{"--issuance-per-minute=0.5"}, IssuanceLimit{}, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o, err := ParseArgs(fs, append([]string{"--issuer-url=https://m2m.example"}, tc.args...))
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if tc.ok && o.IssuanceLimit != tc.limit {
				t.Fatalf("got %+v, want %+v", o.IssuanceLimit, tc.limit)
			}
		})
	}
}

// A key-pair client over its issuance limit issues nothing, so its assertions' jtis take no
// place in the replay cache: flooding, it cannot fill its namespace's share and lock its
// neighbours out. The jti of an assertion refused for the limit is still checked if the
// request is served after all, and an assertion served once is refused when replayed.
func TestAKeyPairClientOverItsLimitLeavesTheReplayCacheToItsNeighbours(t *testing.T) {
	flood, fc := generatedKeyClientNamed(t, m2mv1alpha1.KeyAlgorithmES256, "m2m-flood")
	sibling, sc := generatedKeyClientNamed(t, m2mv1alpha1.KeyAlgorithmES256, "m2m-sibling")
	l := newLimitedServer(t, Config{IssuanceLimit: IssuanceLimit{PerMinute: 2, Burst: 1}, ReplayBudget: minReplayShare,
		Clients: mapClients{"m2m-flood": fc, "m2m-sibling": sc}})
	ask := func(signer crypto.Signer, id, jti string) int {
		return l.post("203.0.113.9:1", "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials},
			"client_assertion_type": {JWTBearerAssertion}, "client_assertion": {assertionOf(t, signer, id, jti, testIssuer)}}).Code
	}
	if code := ask(flood, "m2m-flood", "first"); code != http.StatusOK {
		t.Fatalf("the flooding client's first request: %d", code)
	}
	codes := map[int]int{}
	for i := range minReplayShare + 5 {
		codes[ask(flood, "m2m-flood", fmt.Sprint("j", i))]++
	}
	if codes[http.StatusTooManyRequests] != minReplayShare+5 {
		t.Fatalf("the flooding client's answers over its limit: %v, want only 429s", codes)
	}
	if code := ask(sibling, "m2m-sibling", "sibling-1"); code != http.StatusOK {
		t.Fatalf("the sibling, which never asked before, got %d", code)
	}
	l.clock.Step(30 * time.Second) // a token back in the bucket, the assertions still valid
	if code := ask(flood, "m2m-flood", "first"); code != http.StatusUnauthorized {
		t.Fatalf("a replayed assertion once the bucket refilled: %d, want 401", code)
	}
}
