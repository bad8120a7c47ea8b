package m2mauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

// hanging answers the paths in hang never (until the test ends), and the rest as next does.
func hanging(t *testing.T, next http.Handler, hang ...string) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	var hangNow atomic.Bool
	hangNow.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range hang {
			if r.URL.Path == p {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv
}

// within runs f and fails the test if it has not returned after a generous bound: a call that
// ignores its deadline would otherwise hang the test until the test binary's timeout.
func within(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not return by its context's deadline")
	}
}

func TestAVerifierWithoutAnAudienceRefusesToBuild(t *testing.T) {
	srv := newJWKSServer(t, genKey(t, signingkeys.ES256))
	if _, err := NewVerifier(context.Background(), srv.URL); !errors.Is(err, ErrNoAudience) {
		t.Fatalf("err %v, want ErrNoAudience", err)
	}
	if n := srv.fetches.Load(); n != 0 {
		t.Fatalf("a verifier that cannot be built fetched the JWKS %d times", n)
	}
}

// RFC 9068 §4: a token minted for another service is refused by default; a verifier accepts any
// of its audiences, or every audience only when told so.
func TestATokenForAnotherServiceIsRefusedUnlessTheVerifierSaysAnyAudience(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	token := mint(t, ec, goodClaims(srv.URL), nil) // aud https://api.example.com
	for sentence, tc := range map[string]struct {
		opts []VerifierOption
		want error
	}{
		"a verifier for another service refuses it":            {[]VerifierOption{WithAudiences("https://billing.example.com")}, ErrAudience},
		"a verifier for the token's service accepts it":        {[]VerifierOption{WithAudiences("https://api.example.com")}, nil},
		"a verifier for several audiences accepts any of them": {[]VerifierOption{WithAudiences("https://billing.example.com", "https://api.example.com")}, nil},
		"a verifier told to accept any audience accepts it":    {[]VerifierOption{WithAnyAudience()}, nil},
	} {
		t.Run(sentence, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), srv.URL, append(tc.opts, WithClock(func() time.Time { return t0.Add(time.Minute) }))...)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if _, err := v.Authenticate(context.Background(), token); !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			Middleware(v)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, req)
			if want := map[bool]int{true: 200, false: 401}[tc.want == nil]; rec.Code != want {
				t.Fatalf("the middleware answered %d, want %d", rec.Code, want)
			}
		})
	}
}

// A JWKS endpoint that accepts the connection and never answers: construction returns by its
// context's deadline, however long the fetch timeout.
func TestNewVerifierReturnsByItsDeadlineWhenTheIssuerNeverAnswers(t *testing.T) {
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/jwks"} {
		t.Run(path, func(t *testing.T) {
			keys := newJWKSServer(t, genKey(t, signingkeys.ES256))
			var srv *httptest.Server
			srv = hanging(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// Metadata for this server's URL, keys from the real JWKS server.
				if r.URL.Path == "/.well-known/oauth-authorization-server" {
					_, _ = w.Write([]byte(`{"issuer":"` + srv.URL + `","jwks_uri":"` + srv.URL + `/jwks"}`))
					return
				}
				keys.Config.Handler.ServeHTTP(w, r)
			}), path)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			within(t, func() {
				_, err := NewVerifier(ctx, srv.URL, WithAnyAudience(), WithFetchTimeout(time.Hour))
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err %v, want the context's deadline", err)
				}
			})
		})
	}
}

// After construction the JWKS endpoint hangs. Authenticate with an unknown kid returns by the
// request's deadline, and fifty such requests leave no goroutines behind but the one shared
// fetch.
func TestAuthenticateReturnsByTheRequestsDeadlineWhenTheJWKSHangs(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	keys := newJWKSServer(t, ec)
	var hang atomic.Bool
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		keys.Config.Handler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(release)
	v, err := NewVerifier(context.Background(), keys.URL, WithAnyAudience(), WithJWKSURL(srv.URL+"/jwks"), unlimitedRefresh(), WithFetchTimeout(time.Hour),
		WithClock(func() time.Time { return t0.Add(time.Minute) }))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	hang.Store(true)
	token := mint(t, genKey(t, signingkeys.ES256), goodClaims(keys.URL), nil)
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	within(t, func() {
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				if _, err := v.Authenticate(ctx, token); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err %v, want the request's deadline", err)
				}
			}()
		}
		wg.Wait()
	})
	// The shared fetch, its HTTP connection's goroutines, and the server's handler remain.
	if after := runtime.NumGoroutine(); after > before+6 {
		t.Fatalf("%d goroutines before, %d after 50 requests that timed out", before, after)
	}
}

// The context given to NewVerifier bounds construction only: keys are refreshed after it ends,
// until Close.
func TestKeyRefreshOutlivesTheConstructionContextUntilClose(t *testing.T) {
	srv := newJWKSServer(t, genKey(t, signingkeys.ES256))
	srv.maxAge.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	v, err := NewVerifier(ctx, srv.URL, WithAnyAudience(), WithMinRefreshInterval(time.Second))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.fetches.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d JWKS fetches after the construction context ended; the refresh stopped with it", srv.fetches.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.Close()
}

// While the JWKS fails, tokens with made-up kids cause one attempt per interval, and the interval
// doubles with each failure.
func TestFailedJWKSFetchesAreRateLimitedWithBackoff(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	keys := newJWKSServer(t, ec)
	var attempts atomic.Int64
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		keys.Config.Handler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	var now atomic.Int64
	now.Store(t0.Add(time.Minute).UnixNano())
	v, err := NewVerifier(context.Background(), keys.URL, WithAnyAudience(), WithJWKSURL(srv.URL+"/jwks"), WithMinRefreshInterval(30*time.Second),
		WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	failing.Store(true)
	madeUp := func() {
		for range 10 {
			_, _ = v.Authenticate(context.Background(), mint(t, genKey(t, signingkeys.ES256), goodClaims(keys.URL), nil))
		}
	}
	for _, step := range []struct {
		sentence string
		advance  time.Duration
		want     int64
	}{
		{"a failure within the interval after the first fetch causes no attempt", 0, 1},
		{"once the interval has passed, one attempt (it fails)", 30 * time.Second, 2},
		{"after one failure, the interval has doubled: no attempt at 30s", 30 * time.Second, 2},
		{"one attempt at 60s", 30 * time.Second, 3},
		{"after two failures, none at 119s", 119 * time.Second, 3},
		{"one at 120s", time.Second, 4},
	} {
		now.Add(int64(step.advance))
		madeUp()
		if got := attempts.Load(); got != step.want {
			t.Fatalf("%s: %d attempts in all, want %d", step.sentence, got, step.want)
		}
	}
}

// A JWKS URL may redirect within its origin, never to another scheme or host.
func TestJWKSRedirectsToAnotherSchemeOrHostAreRefused(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	plain := newJWKSServer(t, ec)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-http":
			http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
		case "/moved":
			http.Redirect(w, r, "/jwks", http.StatusFound)
		case "/jwks":
			plain.Config.Handler.ServeHTTP(w, r)
		}
	}))
	defer tlsSrv.Close()
	if _, err := NewVerifier(context.Background(), plain.URL, WithAnyAudience(), WithJWKSURL(tlsSrv.URL+"/to-http"), WithHTTPClient(tlsSrv.Client())); !errors.Is(err, ErrJWKS) {
		t.Fatalf("a redirect from https to http: %v, want ErrJWKS", err)
	}
	if n := plain.fetches.Load(); n != 0 {
		t.Fatalf("the http server was asked %d times", n)
	}
	v, err := NewVerifier(context.Background(), plain.URL, WithAnyAudience(), WithJWKSURL(tlsSrv.URL+"/moved"), WithHTTPClient(tlsSrv.Client()))
	if err != nil {
		t.Fatalf("a redirect within the origin: %v", err)
	}
	v.Close()
}

// Options that cannot work are refused when the verifier is built, not discovered in production.
func TestAVerifierRefusesOptionsThatCannotWork(t *testing.T) {
	srv := newJWKSServer(t, genKey(t, signingkeys.ES256))
	for sentence, opts := range map[string][]VerifierOption{
		"no rate limit on unknown kids":        {WithAnyAudience(), WithMinRefreshInterval(0)},
		"a negative refresh interval":          {WithAnyAudience(), WithMinRefreshInterval(-time.Second)},
		"a fetch timeout of zero":              {WithAnyAudience(), WithFetchTimeout(0)},
		"an audience and any audience at once": {WithAnyAudience(), WithAudiences("https://api.example.com")},
		"an empty audience":                    {WithAudiences("")},
	} {
		if v, err := NewVerifier(context.Background(), srv.URL, opts...); err == nil {
			v.Close()
			t.Errorf("%s: built", sentence)
		}
	}
}

// A JWKS that comes back empty (an error page, a proxy) is a failed fetch: the keys fetched
// before stay in use.
func TestAnEmptyJWKSKeepsTheKeysFetchedBefore(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	keys := newJWKSServer(t, ec)
	var empty atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if empty.Load() {
			_, _ = w.Write([]byte(`{"keys":[]}`))
			return
		}
		keys.Config.Handler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	v, err := NewVerifier(context.Background(), keys.URL, WithAnyAudience(), WithJWKSURL(srv.URL+"/jwks"), unlimitedRefresh(),
		WithClock(func() time.Time { return t0.Add(time.Minute) }))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	empty.Store(true)
	// An unknown kid makes it fetch the empty set.
	if _, err := v.Authenticate(context.Background(), mint(t, genKey(t, signingkeys.ES256), goodClaims(keys.URL), nil)); !errors.Is(err, ErrJWKS) {
		t.Fatalf("an empty JWKS: %v, want ErrJWKS", err)
	}
	if _, err := v.Authenticate(context.Background(), mint(t, ec, goodClaims(keys.URL), nil)); err != nil {
		t.Fatalf("after an empty JWKS a valid token is refused: %v", err)
	}
}

// An https issuer whose metadata names an http JWKS is refused: the keys would come unprotected.
func TestAnHTTPSIssuerWithAnHTTPJWKSIsRefused(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"` + srv.URL + `","jwks_uri":"http://keys.example.com/jwks"}`))
	}))
	defer srv.Close()
	if _, err := NewVerifier(context.Background(), srv.URL, WithAnyAudience(), WithHTTPClient(srv.Client())); !errors.Is(err, ErrJWKS) {
		t.Fatalf("err %v, want ErrJWKS", err)
	}
}
