package tokenserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// countingAuth counts the authentication work (decoy and authenticate) of an authenticator.
type countingAuth struct {
	authenticator
	work *atomic.Int64
}

func (c countingAuth) decoy(req *tokenRequest) { c.work.Add(1); c.authenticator.decoy(req) }

func (c countingAuth) authenticate(ctx context.Context, req *tokenRequest, client *CachedClient, st *keyState) (*CachedClient, *oauthError) {
	c.work.Add(1)
	return c.authenticator.authenticate(ctx, req, client, st)
}

// limited is a Server with a limit on failed authentications, whose authentication work is
// counted, called in process so that each request comes from the address the test chooses.
type limited struct {
	s     *Server
	clock *clocktesting.FakeClock
	reg   *prometheus.Registry
	work  atomic.Int64
}

func newLimited(t *testing.T, limit FailureLimit, addrs ClientAddresses) *limited {
	t.Helper()
	return newLimitedServer(t, Config{FailureLimit: limit, ClientAddresses: addrs})
}

// newLimitedServer is newLimited for any limits of cfg, which it completes with the issuer, a
// key, the clock and the registry, and with the client goodID unless cfg has clients.
func newLimitedServer(t *testing.T, cfg Config) *limited {
	t.Helper()
	_, keys := staticKeys(t, signingkeys.ES256)
	l := &limited{clock: clocktesting.NewFakeClock(t0), reg: prometheus.NewRegistry()}
	cfg.IssuerURL, cfg.Keys, cfg.Clock, cfg.Registry = testIssuer, keys, l.clock, l.reg
	if cfg.Clients == nil {
		cfg.Clients = mapClients{goodID: testClient(goodID, goodSecret)}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range s.authenticators {
		s.authenticators[i] = countingAuth{a, &l.work}
	}
	l.s = s
	return l
}

const wrongSecret = "a-wrong-secret-0123456789abcdefghijklmnopqrstuv"

// token asks for a token with secret from the connection address from (host:port).
func (l *limited) token(from, secret string, header ...string) *httptest.ResponseRecorder {
	return l.post(from, "/oauth2/token", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {goodID}, "client_secret": {secret}}, header...)
}

// post sends form to path from the connection address from (host:port), with header's pairs.
func (l *limited) post(from, path string, form url.Values, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.RemoteAddr = from
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	l.s.Handler().ServeHTTP(w, r)
	return w
}

// expect asks n times for a token with the good secret from from and fails unless each answer
// has status want.
func (l *limited) expect(t *testing.T, what, from string, n, want int, header ...string) {
	t.Helper()
	for range n {
		if w := l.token(from, goodSecret, header...); w.Code != want {
			t.Fatalf("%s: got %d %s, want %d", what, w.Code, w.Body, want)
		}
	}
}

// want429 fails unless w is a 429 with Retry-After retryAfter (why says why that value),
// no-store and an OAuth error too_many_requests with a description.
func want429(t *testing.T, w *httptest.ResponseRecorder, retryAfter, why string) {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("over the limit: got %d %s, want 429", w.Code, w.Body)
	}
	if got := w.Header().Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After %q, want %s (%s)", got, retryAfter, why)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error"] != ErrTooManyRequests || body["error_description"] == "" {
		t.Errorf("body %s, want error %s with a description", w.Body, ErrTooManyRequests)
	}
}

func (l *limited) failTimes(t *testing.T, from string, n int) {
	t.Helper()
	for i := range n {
		if w := l.token(from, wrongSecret); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d from %s: got %d %s, want 401", i+1, from, w.Code, w.Body)
		}
	}
}

// A source that used its burst of failures is refused with 429, Retry-After and an OAuth error,
// before any authentication work, even with the right secret; the refusal counts under its
// reason in namespace "unknown".
func TestASourceOverItsLimitGets429WithRetryAfterBeforeAnyAuthenticationWork(t *testing.T) {
	l := newLimited(t, FailureLimit{Rate: 0.5, Burst: 3}, ClientAddresses{})
	l.failTimes(t, "203.0.113.9:1000", 3)
	before := l.work.Load()
	for _, secret := range []string{wrongSecret, goodSecret} {
		want429(t, l.token("203.0.113.9:2000", secret), "2", "one failure at 0.5 a second")
	}
	if got := l.work.Load(); got != before {
		t.Errorf("the refused requests did %d authentications, want none", got-before)
	}
	if got := testutil.ToFloat64(l.s.metrics.failures.WithLabelValues(reasonSourceLimited.name, unknown)); got != 2 {
		t.Errorf("m2m_token_failures_total{reason=%q,namespace=unknown} = %v, want 2", reasonSourceLimited.name, got)
	}
}

// Once its bucket has refilled a token, a source is served again (and fails once more only).
func TestASourceIsServedAgainWhenItsBucketRefills(t *testing.T) {
	l := newLimited(t, FailureLimit{Rate: 0.5, Burst: 3}, ClientAddresses{})
	l.failTimes(t, "203.0.113.9:1000", 3)
	l.clock.Step(2 * time.Second)
	l.expect(t, "after Retry-After", "203.0.113.9:1000", 1, http.StatusOK)
	l.failTimes(t, "203.0.113.9:1000", 1)
	l.expect(t, "after one more failure", "203.0.113.9:1000", 1, http.StatusTooManyRequests)
}

// Attacker test: a flood of failed authentications from one source leaves every other source's
// valid requests served, and their failures their own budget.
func TestAFloodOfFailuresFromOneSourceDoesNotFailAnotherSourcesValidRequests(t *testing.T) {
	l := newLimited(t, FailureLimit{Rate: 1, Burst: 5}, ClientAddresses{})
	for range 1000 {
		l.token("203.0.113.66:1000", wrongSecret)
	}
	l.expect(t, "the flooding source", "203.0.113.66:1000", 1, http.StatusTooManyRequests)
	l.expect(t, "another source's valid request", "198.51.100.1:1000", 20, http.StatusOK)
	l.failTimes(t, "198.51.100.1:1000", 5)
}

// Successful requests never count: a source that got many tokens still has its whole burst of
// failures.
func TestSuccessesNeverCountAgainstTheSource(t *testing.T) {
	l := newLimited(t, FailureLimit{Rate: 1, Burst: 3}, ClientAddresses{})
	l.expect(t, "a valid request", "203.0.113.9:1000", 100, http.StatusOK)
	l.failTimes(t, "203.0.113.9:1000", 3)
	l.expect(t, "after the burst of failures", "203.0.113.9:1000", 1, http.StatusTooManyRequests)
}

// Addresses of one IPv6 /64 are one source, since one host is routinely given a whole /64; the
// next /64 is another.
func TestTheAddressesOfAnIPv6Slash64AreOneSource(t *testing.T) {
	l := newLimited(t, FailureLimit{Rate: 1, Burst: 3}, ClientAddresses{})
	for i := range 3 {
		l.failTimes(t, fmt.Sprintf("[2001:db8:1:2:%x::1]:1000", i+1), 1)
	}
	l.expect(t, "another address of the /64", "[2001:db8:1:2:ffff::9]:1000", 1, http.StatusTooManyRequests)
	l.expect(t, "the next /64", "[2001:db8:1:3::1]:1000", 1, http.StatusOK)
}

// Behind a trusted proxy, the limit applies to the client the proxy names, not to the proxy:
// one client over its limit leaves the others behind the same proxy served.
func TestBehindATrustedProxyTheLimitAppliesToTheClientItNames(t *testing.T) {
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	l := newLimited(t, FailureLimit{Rate: 1, Burst: 3}, ClientAddresses{Trusted: trusted})
	for range 3 {
		if w := l.token("10.0.0.2:1000", wrongSecret, "X-Forwarded-For", "203.0.113.66"); w.Code != http.StatusUnauthorized {
			t.Fatalf("got %d", w.Code)
		}
	}
	l.expect(t, "the failing client", "10.0.0.2:1000", 1, http.StatusTooManyRequests, "X-Forwarded-For", "203.0.113.66")
	l.expect(t, "another client behind the proxy, naming the failing one to its left", "10.0.0.2:1000", 1, http.StatusOK, "X-Forwarded-For", "203.0.113.66, 198.51.100.1")
}

// The table never holds more than its bound, and a flood of distinct addresses that each fail
// once does not push out a source over its limit: eviction drops refilled sources first, then
// those with the most tokens left.
func TestAFloodOfDistinctAddressesKeepsTheTableBoundedAndTheOffenderLimited(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	lim := newSourceLimiter(FailureLimit{Rate: 1, Burst: 10, Sources: 64}, clk)
	offender := netip.MustParseAddr("203.0.113.66")
	for range 10 {
		lim.failed(offender)
	}
	for i := range 10000 {
		lim.failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if n := lim.size(); n > 64 {
			t.Fatalf("after %d addresses the table holds %d sources, over 64", i+1, n)
		}
		if _, over := lim.refused(offender); !over {
			t.Fatalf("after %d addresses the offender is no longer limited", i+1)
		}
	}
}

// Sources whose buckets have refilled are the first to go when the table is full, before any
// that is still in debt.
func TestAFullTableDropsRefilledSourcesFirst(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	lim := newSourceLimiter(FailureLimit{Rate: 1, Burst: 2, Sources: 4}, clk)
	for i := range 3 {
		lim.failed(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	clk.Step(time.Second) // the three refill
	offender := netip.MustParseAddr("203.0.113.66")
	lim.failed(offender)
	lim.failed(offender)
	lim.failed(netip.MustParseAddr("198.51.100.1"))
	if n := lim.size(); n != 2 {
		t.Fatalf("the table holds %d sources, want the 2 in debt", n)
	}
	if _, over := lim.refused(offender); !over {
		t.Fatal("the offender is no longer limited")
	}
}

// A zero FailureLimit (a Server embedded without flags) limits nothing.
func TestAZeroFailureLimitLimitsNothing(t *testing.T) {
	l := newLimited(t, FailureLimit{}, ClientAddresses{})
	l.failTimes(t, "203.0.113.9:1000", 500)
}

// The check and the spend are apart (the authentication runs between), so the failures in flight
// when a bucket reaches 1 all pass; the bucket goes into debt for them and the source waits
// until it is paid, so the long-run rate holds (the review let 905 failures through against
// about 130 allowed, with 64 concurrent requests, when the bucket stopped at 0).
func TestFailuresInFlightPutTheSourceInDebtSoTheLongRunRateHolds(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	l := newSourceLimiter(FailureLimit{Rate: 1, Burst: 3}, clk)
	a := netip.MustParseAddr("192.0.2.7")
	for range 10 { // ten requests checked at once, before any of them failed
		if _, over := l.refused(a); over {
			t.Fatal("a source with no failures was refused")
		}
	}
	for range 10 {
		l.failed(a)
	}
	wait, over := l.refused(a)
	if !over || wait != 4*time.Second {
		t.Fatalf("after 10 failures in flight against a burst of 3: refused %v for %s; want 4s (a debt of 3, then one token)", over, wait)
	}
	clk.Step(3 * time.Second)
	if _, over := l.refused(a); !over {
		t.Fatal("the source was served before its debt was paid")
	}
	clk.Step(time.Second)
	if _, over := l.refused(a); over {
		t.Fatal("the source was refused after its debt was paid")
	}
}

// A link-local proxy's address carries a zone (fe80::1%eth0), which networks never have.
func TestAZonedProxyAddressIsTrusted(t *testing.T) {
	c := ClientAddresses{Trusted: []netip.Prefix{netip.MustParsePrefix("fe80::/10")}}
	if !c.trusted(netip.MustParseAddr("fe80::1%eth0")) {
		t.Fatal("a zoned link-local address is not trusted by fe80::/10")
	}
}
