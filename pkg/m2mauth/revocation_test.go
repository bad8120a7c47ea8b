package m2mauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// revocationServer is an issuer that publishes a revocation list as the token server does: an
// ETag of the content and a long-poll on ?wait=.
type revocationServer struct {
	*httptest.Server
	key *signingkeys.Key

	mu      sync.Mutex
	list    map[string]int64
	etag    string
	changed chan struct{}
	// body, when set, is served instead of the signed list (a forged or hostile one).
	body string
	// down makes the list answer 503.
	down     bool
	requests atomic.Int64
	now      func() time.Time
}

func newRevocationServer(t *testing.T, now func() time.Time) *revocationServer {
	t.Helper()
	s := &revocationServer{key: genKey(t, signingkeys.ES256), changed: make(chan struct{}), now: now}
	s.setList(map[string]int64{})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": s.URL, "jwks_uri": s.URL + "/jwks", "m2m_revocation_list_uri": s.URL + "/revocations"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode((&signingkeys.Set{Keys: []*signingkeys.Key{s.key}}).Published(t0, time.Hour))
		case "/revocations":
			s.serveList(t, w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *revocationServer) serveList(t *testing.T, w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	etag, changed, down, body := s.etag, s.changed, s.down, s.body
	s.mu.Unlock()
	if down {
		http.Error(w, "away", http.StatusServiceUnavailable)
		return
	}
	inm := r.Header.Get("If-None-Match")
	if inm == etag && r.URL.Query().Get("wait") != "" {
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		etag, body = s.etag, s.body
		s.mu.Unlock()
	}
	w.Header().Set("ETag", etag)
	if inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if body == "" {
		body = s.signed(t, s.URL, "revocation-list+jwt", s.currentList(), s.now())
	}
	_, _ = w.Write([]byte(body))
}

func (s *revocationServer) currentList() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list
}

// signed is a list signed with the server's key.
func (s *revocationServer) signed(t *testing.T, iss, typ string, list map[string]int64, at time.Time) string {
	return mint(t, s.key, jwt.MapClaims{"iss": iss, "iat": at.Unix(), "exp": at.Add(10 * time.Minute).Unix(), "not_before": list}, map[string]any{"typ": typ})
}

func (s *revocationServer) setList(list map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list, s.body = list, ""
	s.etag = fmt.Sprintf(`"%d"`, time.Now().UnixNano())
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// serveBody replaces the list with body, under a new ETag.
func (s *revocationServer) serveBody(body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
	s.etag = fmt.Sprintf(`"%d"`, time.Now().UnixNano())
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *revocationServer) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// fakeClock is a clock that tests move.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(at time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(at.UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) option() VerifierOption  { return WithClock(c.Now) }
func tokenAt(t *testing.T, s *revocationServer, client string, iat time.Time) string {
	t.Helper()
	c := goodClaims(s.URL)
	c["client_id"], c["sub"], c["iat"], c["nbf"], c["exp"] = client, client, iat.Unix(), iat.Unix(), iat.Add(time.Hour).Unix()
	return mint(t, s.key, c, nil)
}

func newRevocationVerifier(t *testing.T, s *revocationServer, clk *fakeClock, opts ...VerifierOption) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), s.URL, append([]VerifierOption{WithAudiences("https://api.example.com"), clk.option()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// refetch asks for the list once, as the background loop does, without waiting.
func refetch(v *Verifier) error { return v.revocations.fetch(context.Background(), 0) }

func TestTokensIssuedBeforeTheirClientsNotBeforeAreRefusedAndLaterOnesAndOtherClientsAccepted(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	s.setList(map[string]int64{"m2m-a": t0.Add(time.Second).Unix()})
	v := newRevocationVerifier(t, s, clk)

	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-a", t0)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a token issued before the not-before: %v, want ErrRevoked", err)
	}
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-a", t0.Add(time.Second))); err != nil {
		t.Fatalf("a token issued at the not-before: %v", err)
	}
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-b", t0)); err != nil {
		t.Fatalf("another client's token: %v", err)
	}
	if st := v.RevocationStatus(); !st.Enabled || st.Entries != 1 || st.Stale {
		t.Fatalf("status %+v, want enabled, one entry, fresh", st)
	}
}

func TestAChangeOfTheListReachesARunningVerifierThroughItsLongPoll(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	v := newRevocationVerifier(t, s, clk)
	tok := tokenAt(t, s, "m2m-a", t0)
	if _, err := v.Authenticate(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	// The background loop is waiting on the server now; the change wakes it.
	s.setList(map[string]int64{"m2m-a": t0.Add(time.Second).Unix()})
	deadline := time.After(30 * time.Second)
	for {
		updated := v.revocations.Updated()
		if _, err := v.Authenticate(context.Background(), tok); errors.Is(err, ErrRevoked) {
			return
		}
		select {
		case <-updated:
		case <-deadline:
			t.Fatal("the verifier did not refuse the token after the list changed")
		}
	}
}

func TestDuringAnOutageTheLastListIsKeptForTheStalenessBoundThenEveryTokenIsRefused(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	s.setList(map[string]int64{"m2m-a": t0.Add(time.Second).Unix()})
	v := newRevocationVerifier(t, s, clk)
	revoked, other := tokenAt(t, s, "m2m-a", t0), tokenAt(t, s, "m2m-b", t0)
	s.setDown(true)
	if err := refetch(v); err == nil {
		t.Fatal("a fetch from a server that is down succeeded")
	}

	clk.Advance(DefaultRevocationStaleness - time.Second)
	if _, err := v.Authenticate(context.Background(), revoked); !errors.Is(err, ErrRevoked) {
		t.Fatalf("within the bound, a revoked token: %v, want ErrRevoked from the last list", err)
	}
	if _, err := v.Authenticate(context.Background(), other); err != nil {
		t.Fatalf("within the bound, another client's token: %v", err)
	}

	clk.Advance(2 * time.Second)
	if _, err := v.Authenticate(context.Background(), other); !errors.Is(err, ErrRevocationUnavailable) {
		t.Fatalf("past the bound: %v, want ErrRevocationUnavailable", err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+other)
	Middleware(v)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("middleware past the bound answered %d, want 503", rec.Code)
	}

	s.setDown(false)
	if err := refetch(v); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authenticate(context.Background(), other); err != nil {
		t.Fatalf("after the server is back: %v", err)
	}
}

func TestAcceptWhenRevocationUnavailableKeepsCheckingAgainstTheLastListPastTheBound(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	s.setList(map[string]int64{"m2m-a": t0.Add(time.Second).Unix()})
	v := newRevocationVerifier(t, s, clk, AcceptWhenRevocationUnavailable(), WithRevocationStaleness(10*time.Second))
	s.setDown(true)
	clk.Advance(30 * time.Minute)
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-b", t0)); err != nil {
		t.Fatalf("another client's token past the bound: %v", err)
	}
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-a", t0)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a revoked token past the bound: %v, want ErrRevoked", err)
	}
}

func TestNewVerifierFailsWhenTheFirstListCannotBeFetchedUnlessItAcceptsWhenUnavailable(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	s.setDown(true)
	if _, err := NewVerifier(context.Background(), s.URL, WithAudiences("https://api.example.com"), clk.option()); !errors.Is(err, ErrRevocationUnavailable) {
		t.Fatalf("NewVerifier: %v, want ErrRevocationUnavailable", err)
	}
	v := newRevocationVerifier(t, s, clk, AcceptWhenRevocationUnavailable())
	if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-a", t0)); err != nil {
		t.Fatalf("with no list and AcceptWhenRevocationUnavailable: %v", err)
	}
	off := newRevocationVerifier(t, s, clk, WithoutRevocation())
	if off.RevocationStatus().Enabled {
		t.Fatal("WithoutRevocation left revocation checking on")
	}
}

// A list that does not verify is a failed fetch: the verifier keeps the list it has.
func TestListsThatDoNotVerifyAreRefusedAndTheLastListIsKept(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	s.setList(map[string]int64{"m2m-a": t0.Add(time.Second).Unix()})
	v := newRevocationVerifier(t, s, clk)
	empty := map[string]int64{}
	otherKey := genKey(t, signingkeys.ES256)
	stranger := mint(t, otherKey, jwt.MapClaims{"iss": s.URL, "iat": clk.Now().Unix(), "exp": clk.Now().Add(time.Minute).Unix(), "not_before": empty},
		map[string]any{"typ": "revocation-list+jwt", "kid": s.key.KID})
	good := s.signed(t, s.URL, "revocation-list+jwt", empty, clk.Now())
	parts := strings.Split(good, ".")
	for name, body := range map[string]string{
		"signed by a key not in the JWKS":  stranger,
		"from another issuer":              s.signed(t, "https://other.example.com", "revocation-list+jwt", empty, clk.Now()),
		"an access token":                  s.signed(t, s.URL, "at+jwt", empty, clk.Now()),
		"expired (an old list replayed)":   s.signed(t, s.URL, "revocation-list+jwt", empty, clk.Now().Add(-time.Hour)),
		"with a payload changed":           parts[0] + "." + flip(parts[1], 5) + "." + parts[2],
		"unsigned":                         mint(t, s.key, jwt.MapClaims{}, map[string]any{"alg": "none"}),
		"not a JWT":                        "<html>proxy error</html>",
		"over the limit (a hostile giant)": strings.Repeat("a", 2<<20),
	} {
		t.Run(name, func(t *testing.T) {
			s.serveBody(body)
			if err := refetch(v); !errors.Is(err, ErrRevocationUnavailable) {
				t.Fatalf("fetch: %v, want ErrRevocationUnavailable", err)
			}
			if _, err := v.Authenticate(context.Background(), tokenAt(t, s, "m2m-a", t0)); !errors.Is(err, ErrRevoked) {
				t.Fatalf("after the refused list, a revoked token: %v, want ErrRevoked from the last list", err)
			}
		})
	}
}

func TestTheListSizeLimitAppliesToTheBodyRead(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Minute))
	s := newRevocationServer(t, clk.Now)
	huge := map[string]int64{}
	for i := range 20000 {
		huge[fmt.Sprintf("client-%06d", i)] = t0.Unix()
	}
	s.setList(huge)
	if _, err := NewVerifier(context.Background(), s.URL, WithAudiences("https://api.example.com"), clk.option(), WithRevocationListLimit(64<<10)); !errors.Is(err, ErrRevocationUnavailable) {
		t.Fatalf("a list over WithRevocationListLimit: %v, want ErrRevocationUnavailable", err)
	}
	v := newRevocationVerifier(t, s, clk)
	if n := v.RevocationStatus().Entries; n != 20000 {
		t.Fatalf("entries %d, want 20000 under the default limit", n)
	}
}

// flip changes the character at i of a base64url string to another one.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}
