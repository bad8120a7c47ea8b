package m2mauth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeIntrospection answers RFC 7662 requests from the client m2m-a with its current secret:
// active, with exp, until revoked.
type fakeIntrospection struct {
	*httptest.Server
	mu      sync.Mutex
	secret  string
	revoked bool
	exp     time.Time
	aud     string
	iss     string // the answer's iss; empty means the server's URL
	bound   bool   // the token is bound to a DPoP key: the answer carries cnf
	// certBound: the token is bound to a client certificate: a Bearer answer with cnf x5t#S256.
	certBound bool
	asked     atomic.Int64
}

func newFakeIntrospection(t *testing.T, secret string, exp time.Time) *fakeIntrospection {
	s := &fakeIntrospection{secret: secret, exp: exp, aud: "https://billing.example.com"}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.asked.Add(1)
		id, sec, _ := r.BasicAuth()
		s.mu.Lock()
		defer s.mu.Unlock()
		if id != "m2m-a" || sec != s.secret {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		if s.revoked || r.FormValue("token") != "the-token" {
			_, _ = w.Write([]byte(`{"active":false}`))
			return
		}
		answer := map[string]any{"active": true, "client_id": "m2m-b", "sub": "m2m-b", "scope": "read:invoices", "aud": s.aud, "iss": cmp.Or(s.iss, s.URL), "exp": s.exp.Unix()}
		if s.bound {
			answer["token_type"], answer["cnf"] = "DPoP", map[string]string{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
		}
		if s.certBound {
			answer["token_type"], answer["cnf"] = "Bearer", map[string]string{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
		}
		_ = json.NewEncoder(w).Encode(answer)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeIntrospection) set(f func(*fakeIntrospection)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func mountIntrospectionSecret(t *testing.T, dir, issuer, secret string, version int) {
	t.Helper()
	mountIntrospectionSecretAt(t, dir, issuer, issuer+"/oauth2/token", secret, version)
}

// mountIntrospectionSecretAt mounts a Secret whose token_url is not under its issuer, as with a
// public door.
func mountIntrospectionSecretAt(t *testing.T, dir, issuer, tokenURL, secret string, version int) {
	t.Helper()
	mountSecret(t, dir, tokenURL, secret, version)
	data := filepath.Join(dir, "..data", "issuer")
	if err := os.WriteFile(data, []byte(issuer), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "issuer")); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", "issuer"), filepath.Join(dir, "issuer")); err != nil {
			t.Fatal(err)
		}
	}
}

func withIntrospectionNow(now func() time.Time) IntrospectorOption {
	return func(c *introspectorConfig) { c.now = now }
}

// A service sees a revoked (disabled or deleted) client's token as inactive once its short cache
// runs out, long before the token expires; within the TTL it does not ask again.
func TestIntrospectCachesBrieflyAndThenSeesARevocation(t *testing.T) {
	var now atomic.Int64
	now.Store(t0.UnixNano())
	srv := newFakeIntrospection(t, "secret-one", t0.Add(time.Hour))
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAudiences("https://billing.example.com"), IntrospectionCacheTTL(10*time.Second), withIntrospectionNow(func() time.Time { return time.Unix(0, now.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := in.Introspect(ctx, "the-token")
	if err != nil || !r.Active || r.ClientID != "m2m-b" || len(r.Audience) != 1 || r.Scopes[0] != "read:invoices" || !r.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("%+v, %v", r, err)
	}
	srv.set(func(s *fakeIntrospection) { s.revoked = true })
	now.Add(int64(9 * time.Second))
	if r, _ := in.Introspect(ctx, "the-token"); !r.Active || srv.asked.Load() != 1 {
		t.Fatalf("within the TTL: active %v after %d requests; want the cached answer", r.Active, srv.asked.Load())
	}
	now.Add(int64(time.Second))
	if r, _ := in.Introspect(ctx, "the-token"); r.Active {
		t.Fatal("after the TTL the revoked client's token is still active")
	}
	if r, _ := in.Introspect(ctx, "another-token"); r.Active {
		t.Fatal("an unknown token is active")
	}
}

// An active answer is never reused past the token's expiry, however long the TTL.
func TestAnActiveAnswerIsNotCachedPastTheTokensExpiry(t *testing.T) {
	var now atomic.Int64
	now.Store(t0.UnixNano())
	srv := newFakeIntrospection(t, "secret-one", t0.Add(5*time.Second))
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAnyAudience(), IntrospectionCacheTTL(time.Hour), withIntrospectionNow(func() time.Time { return time.Unix(0, now.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = in.Introspect(context.Background(), "the-token")
	now.Add(int64(5 * time.Second))
	_, _ = in.Introspect(context.Background(), "the-token")
	if n := srv.asked.Load(); n != 2 {
		t.Fatalf("%d requests; the cached answer outlived the token", n)
	}
}

// The service's own secret rotates: a 401 makes the introspector read its files again and retry.
// An endpoint that fails is an error, never an inactive token; a hanging one returns by the
// caller's deadline.
func TestIntrospectionFollowsARotatedSecretAndFailsClearly(t *testing.T) {
	srv := newFakeIntrospection(t, "secret-one", time.Now().Add(time.Hour))
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAnyAudience(), IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	mountIntrospectionSecret(t, dir, srv.URL, "secret-two", 2)
	srv.set(func(s *fakeIntrospection) { s.secret = "secret-two" })
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || !r.Active {
		t.Fatalf("after the service's rotation: %+v, %v", r, err)
	}
	srv.set(func(s *fakeIntrospection) { s.secret = "secret-three" })
	if _, err := in.Introspect(context.Background(), "the-token"); !errors.Is(err, ErrIntrospection) {
		t.Fatalf("refused credentials: %v, want ErrIntrospection", err)
	}

	hang := hanging(t, http.NotFoundHandler(), "/oauth2/introspect")
	in2, err := NewIntrospector(dir, IntrospectionAnyAudience(), IntrospectionEndpoint(hang.URL+"/oauth2/introspect"), IntrospectionTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	within(t, func() {
		if _, err := in2.Introspect(ctx, "the-token"); !errors.Is(err, ErrIntrospection) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want ErrIntrospection by the deadline", err)
		}
	})
}

// Introspection follows the verifier's audience rule: an introspector needs an audience, and an
// active token minted for another service is inactive for this one.
func TestIntrospectionRefusesATokenForAnotherService(t *testing.T) {
	srv := newFakeIntrospection(t, "secret-one", time.Now().Add(time.Hour))
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	if _, err := NewIntrospector(dir); !errors.Is(err, ErrNoAudience) {
		t.Fatalf("no audience: %v, want ErrNoAudience", err)
	}
	in, err := NewIntrospector(dir, IntrospectionAudiences("https://payments.example.com"), IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || r.Active {
		t.Fatalf("a billing token at payments: %+v, %v; want inactive", r, err)
	}
}

// With a public door the Secret's issuer is the door and its token_url the Service: the
// introspector asks next to token_url, never through the door, and accepts the tokens of the
// issuer the Secret names, or during a move those of IntrospectionIssuers.
func TestIntrospectionAsksTheInClusterDoorAndAcceptsTheIssuersItIsGiven(t *testing.T) {
	const public = "https://auth.example.com"
	srv := newFakeIntrospection(t, "secret-one", time.Now().Add(time.Hour))
	srv.set(func(s *fakeIntrospection) { s.iss = public })
	dir := t.TempDir()
	mountIntrospectionSecretAt(t, dir, public, srv.URL+"/oauth2/token", "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAnyAudience(), IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || !r.Active || srv.asked.Load() != 1 {
		t.Fatalf("a token of the public issuer: %+v, %v after %d requests inside; want active after one", r, err, srv.asked.Load())
	}

	previous := srv.URL
	srv.set(func(s *fakeIntrospection) { s.iss = previous })
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || r.Active {
		t.Fatalf("a token of another issuer: %+v, %v; want inactive", r, err)
	}
	both, err := NewIntrospector(dir, IntrospectionAnyAudience(), IntrospectionCacheTTL(0), IntrospectionIssuers(public, previous+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := both.Introspect(context.Background(), "the-token"); err != nil || !r.Active {
		t.Fatalf("a token of the previous issuer, both given: %+v, %v; want active", r, err)
	}
}

// Introspect sees no request, so it cannot check the proof that a DPoP-bound token needs: such a
// token is reported not active (Bound), never taken for a bearer token (found by the review: a
// stolen bound token passed here).
func TestIntrospectionReportsATokenBoundToAKeyNotActive(t *testing.T) {
	srv := newFakeIntrospection(t, "secret-one", time.Now().Add(time.Hour))
	srv.set(func(s *fakeIntrospection) { s.bound, s.aud = true, "https://payments.example.com" })
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAudiences("https://payments.example.com"), IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	r, err := in.Introspect(context.Background(), "the-token")
	if err != nil || r.Active || !r.Bound {
		t.Fatalf("a bound token: %+v, %v; want not active, Bound", r, err)
	}
	srv.set(func(s *fakeIntrospection) { s.bound = false })
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || !r.Active {
		t.Fatalf("the same token unbound: %+v, %v; want active", r, err)
	}
}

// A certificate-bound token comes as Bearer (RFC 8705 §3.2) with its cnf: Introspect, which sees
// no TLS connection, reports it Bound and not active all the same.
func TestIntrospectionReportsATokenBoundToACertificateNotActive(t *testing.T) {
	srv := newFakeIntrospection(t, "secret-one", time.Now().Add(time.Hour))
	srv.set(func(s *fakeIntrospection) { s.certBound, s.aud = true, "https://payments.example.com" })
	dir := t.TempDir()
	mountIntrospectionSecret(t, dir, srv.URL, "secret-one", 1)
	in, err := NewIntrospector(dir, IntrospectionAudiences("https://payments.example.com"), IntrospectionCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := in.Introspect(context.Background(), "the-token"); err != nil || r.Active || !r.Bound {
		t.Fatalf("a certificate-bound token: %+v, %v; want not active, Bound", r, err)
	}
}
