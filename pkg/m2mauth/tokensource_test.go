package m2mauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// fakeTokenServer accepts exactly one secret for one client, which the test changes to rotate.
type fakeTokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	issued atomic.Int64
}

func newFakeTokenServer(t *testing.T, secret string, ttl time.Duration) *fakeTokenServer {
	s := &fakeTokenServer{secret: secret}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth()
		if !ok {
			_ = r.ParseForm()
			id, sec = r.Form.Get("client_id"), r.Form.Get("client_secret")
		}
		s.mu.Lock()
		want := s.secret
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if id != "m2m-a" || sec != want {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		n := s.issued.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("token-%d", n), "token_type": "Bearer", "expires_in": int(ttl / time.Second)})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeTokenServer) rotate(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secret = secret
}

// mountSecret writes a Secret volume the way the kubelet does: the files are symlinks through
// ..data, which points at a timestamped directory and is swapped atomically on every change.
func mountSecret(t *testing.T, dir, tokenURL, secret string, version int) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..2026_11_28_%d", version))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"client_id": "m2m-a", "client_secret": secret, "token_url": tokenURL} {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func TestTheTokenSourceReusesATokenAndFollowsARotatedSecretWithoutARestart(t *testing.T) {
	srv := newFakeTokenServer(t, "secret-one", time.Hour)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, err := NewTokenSource(ctx, dir, RefreshBefore(59*time.Minute+59*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ts.Token(); again.AccessToken != first.AccessToken {
		t.Fatal("a fresh token was not reused")
	}

	// The Secret rotates: the kubelet swaps ..data; the old secret stops working.
	mountSecret(t, dir, srv.URL, "secret-two", 2)
	srv.rotate("secret-two")
	time.Sleep(1100 * time.Millisecond) // the reused token is due for renewal (1s before expiry)
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("the token source failed after the rotation: %v", err)
	}
	if tok.AccessToken == first.AccessToken {
		t.Fatal("no new token was fetched")
	}
}

// Without the file watch (the kubelet swap not seen yet), an invalid_client makes the token
// source read the files again and retry once.
func TestAnInvalidClientRereadsTheFilesAndRetriesOnce(t *testing.T) {
	srv := newFakeTokenServer(t, "secret-one", time.Hour)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	s := &fileTokenSource{ctx: context.Background(), dir: dir, cfg: tokenSourceConfig{timeout: 10 * time.Second}}
	if err := s.reload(); err != nil {
		t.Fatal(err)
	}
	mountSecret(t, dir, srv.URL, "secret-two", 2)
	srv.rotate("secret-two")
	if _, err := s.Token(); err != nil {
		t.Fatalf("no retry with the new files: %v", err)
	}
	srv.rotate("secret-three") // the files still say secret-two: one retry, then the error
	if _, err := s.Token(); err == nil {
		t.Fatal("a secret the server refuses got a token")
	}
}

func TestNewTokenSourceSaysWhichFileIsMissing(t *testing.T) {
	if _, err := NewTokenSource(context.Background(), t.TempDir()); err == nil {
		t.Fatal("an empty directory gave a token source")
	}
}

// A Secret of a client that authenticates with its pod's ServiceAccount has a client_id and a
// token_url but no secret: the error names the token source that client needs.
func TestNewTokenSourceOnASecretWithoutASecretPointsToTheServiceAccountTokenSource(t *testing.T) {
	dir := t.TempDir()
	for name, value := range map[string]string{"client_id": "m2m-sa-client", "token_url": "https://m2m.example.com/oauth2/token"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := NewTokenSource(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "NewServiceAccountTokenSource") {
		t.Fatalf("error %v, want one that points to NewServiceAccountTokenSource", err)
	}
}

// stallingTokenServer issues a token with a lifetime of an hour, then, once stall is set,
// accepts requests and answers none until release is closed.
type stallingTokenServer struct {
	*httptest.Server
	stall    atomic.Bool
	arrived  chan struct{}
	release  chan struct{}
	released sync.Once
	issued   atomic.Int64
}

func newStallingTokenServer(t *testing.T) *stallingTokenServer {
	s := &stallingTokenServer{arrived: make(chan struct{}, 100), release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.stall.Load() {
			s.arrived <- struct{}{}
			select {
			case <-s.release:
			case <-r.Context().Done():
				return
			}
			http.Error(w, "late", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		n := s.issued.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("token-%d", n), "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(func() { s.unstall(); s.Close() })
	return s
}

func (s *stallingTokenServer) unstall() { s.released.Do(func() { close(s.release) }) }

// withNow makes the token source read the time from now; for tests.
func withNow(now func() time.Time) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.now = now }
}

// A token server that hangs while the cached token is due for renewal, but still valid: the
// caller that refreshes waits one request timeout and gets the cached token; the others get it at
// once, without queueing behind the refresh. Once the token has expired, the hang is an error,
// returned by the request timeout.
func TestAHungTokenServerNeverStallsCallersWhileTheCachedTokenIsValid(t *testing.T) {
	srv := newStallingTokenServer(t)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, err := NewTokenSource(ctx, dir, RequestTimeout(time.Hour), withNow(clock))
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	// Due for renewal (within RefreshBefore's 30s), still valid for 20s; the server hangs.
	now.Add(int64(time.Hour - 20*time.Second))
	srv.stall.Store(true)
	refreshed := make(chan error, 1)
	go func() {
		tok, err := ts.Token()
		if err == nil && tok.AccessToken != first.AccessToken {
			err = fmt.Errorf("got %s", tok.AccessToken)
		}
		refreshed <- err
	}()
	select { // the refresh is waiting on the token server
	case <-srv.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no refresh reached the token server while the cached token was due for renewal")
	}
	within(t, func() {
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != first.AccessToken {
			t.Errorf("a caller during the refresh got %v, %v; want the cached token at once", tok, err)
		}
	})
	srv.unstall()
	if err := <-refreshed; err != nil {
		t.Fatalf("the refreshing caller, after the failed refresh: %v; want the cached token", err)
	}

	// Expired: a hanging token server is an error by the request timeout.
	srv2 := newStallingTokenServer(t)
	srv2.stall.Store(true)
	dir2 := t.TempDir()
	mountSecret(t, dir2, srv2.URL, "secret-one", 1)
	ts2, err := NewTokenSource(ctx, dir2, RequestTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	within(t, func() {
		if _, err := ts2.Token(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want the request timeout", err)
		}
	})
}

type panickingSource struct{ calls atomic.Int64 }

func (p *panickingSource) Token() (*oauth2.Token, error) {
	if p.calls.Add(1) == 1 {
		panic("the token request panicked")
	}
	return &oauth2.Token{AccessToken: "after-the-panic", Expiry: time.Now().Add(time.Hour)}, nil
}

// A panic in a refresh, recovered by the caller (net/http recovers handler panics), does not leave
// the token source waiting for that refresh forever.
func TestAPanicInARefreshDoesNotWedgeTheTokenSource(t *testing.T) {
	c := &cachingTokenSource{src: &panickingSource{}, early: time.Second, now: time.Now}
	func() {
		defer func() { _ = recover() }()
		_, _ = c.Token()
	}()
	within(t, func() {
		if tok, err := c.Token(); err != nil || tok.AccessToken != "after-the-panic" {
			t.Errorf("after the panic: %v, %v", tok, err)
		}
	})
}

// The context given to NewTokenSource bounds the file watch, not the token requests.
func TestTokenRequestsOutliveTheTokenSourcesContext(t *testing.T) {
	srv := newFakeTokenServer(t, "secret-one", time.Second)
	dir := t.TempDir()
	mountSecret(t, dir, srv.URL, "secret-one", 1)
	ctx, cancel := context.WithCancel(context.Background())
	ts, err := NewTokenSource(ctx, dir, RefreshBefore(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := ts.Token(); err != nil {
		t.Fatalf("after its context ended: %v", err)
	}
}

// A refresh that a request with a context starts runs on its own goroutine: a panic in it is the
// refresh's error for that request, not a crash, and the next refresh runs.
func TestAPanicInARefreshForARequestIsAnErrorAndDoesNotWedgeTheTokenSource(t *testing.T) {
	c := &cachingTokenSource{src: &panickingSource{}, early: time.Second, now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	within(t, func() {
		if _, err := c.tokenContext(ctx); err == nil || !strings.Contains(err.Error(), "panicked") {
			t.Errorf("err %v, want the panic as the refresh's error", err)
		}
		if tok, err := c.tokenContext(ctx); err != nil || tok.AccessToken != "after-the-panic" {
			t.Errorf("after the panic: %v, %v", tok, err)
		}
	})
}

// A token server that answers 429 (or 503) with Retry-After is not asked again before that
// time, however often the workload asks, and is asked once the time has come; a Retry-After
// beyond maxRetryAfter waits maxRetryAfter.
func TestATokenServersRetryAfterKeepsTheTokenSourceFromAsking(t *testing.T) {
	for name, tc := range map[string]struct {
		status     int
		retryAfter string
		wait       time.Duration
	}{
		"429 with seconds":              {http.StatusTooManyRequests, "30", 30 * time.Second},
		"503 with seconds":              {http.StatusServiceUnavailable, "7", 7 * time.Second},
		"429 with a day, bounded":       {http.StatusTooManyRequests, "86400", maxRetryAfter},
		"429 with an HTTP date":         {http.StatusTooManyRequests, "Wed, 01 Jul 2026 12:00:20 GMT", 20 * time.Second},
		"429 without Retry-After waits": {http.StatusTooManyRequests, "", 0},
	} {
		t.Run(name, func(t *testing.T) {
			var asked atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				asked.Add(1)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(`{"error":"too_many_requests"}`))
			}))
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			mountSecret(t, dir, srv.URL, "secret-one", 1)
			var now atomic.Int64
			now.Store(t0.UnixNano())
			ts, err := NewTokenSource(context.Background(), dir, withNow(func() time.Time { return time.Unix(0, now.Load()) }))
			if err != nil {
				t.Fatal(err)
			}
			// One attempt may be two requests (x/oauth2 tries both ways of sending the secret).
			if _, err := ts.Token(); err == nil {
				t.Fatal("a token from a server that refuses every request")
			}
			attempt := asked.Load()
			for range 49 {
				if _, err := ts.Token(); err == nil {
					t.Fatal("a token from a server that refuses every request")
				}
			}
			want := attempt
			if tc.wait == 0 {
				want = 50 * attempt // nothing to wait for: each call asks, as before
			}
			if got := asked.Load(); got != want {
				t.Fatalf("50 calls asked the token server %d times, want %d", got, want)
			}
			if tc.wait == 0 {
				return
			}
			now.Add(int64(tc.wait - time.Second))
			_, _ = ts.Token()
			if got := asked.Load(); got != attempt {
				t.Fatalf("a call a second before Retry-After ran out asked again (%d requests)", got)
			}
			now.Add(int64(time.Second))
			_, _ = ts.Token()
			if got := asked.Load(); got != 2*attempt {
				t.Fatalf("a call once Retry-After ran out: %d requests, want %d", got, 2*attempt)
			}
		})
	}
}
