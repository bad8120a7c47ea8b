package m2mauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// resourceServer answers each request as answer says for its bearer token (200 when answer is
// nil), and records the token and body of every request it gets.
type resourceServer struct {
	*httptest.Server
	answer func(token string) (status int, challenge string)
	// gate, when set, runs before a request that is not answered 200 is answered.
	gate func()

	mu  sync.Mutex
	got []received
}

type received struct{ token, body string }

func newResourceServer(t *testing.T, answer func(token string) (int, string)) *resourceServer {
	s := &resourceServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		s.got = append(s.got, received{token, string(body)})
		s.mu.Unlock()
		status, challenge := http.StatusOK, ""
		if s.answer != nil {
			status, challenge = s.answer(token)
		}
		if status != http.StatusOK && s.gate != nil {
			s.gate()
		}
		if challenge != "" {
			w.Header().Set("WWW-Authenticate", challenge)
		}
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "answered %d", status)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *resourceServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// refusing answers as the Middleware does to a token signed by a key no longer in the JWKS.
func refusing(refused func(token string) bool) func(string) (int, string) {
	return func(token string) (int, string) {
		if refused(token) {
			return http.StatusUnauthorized, `Bearer realm="https://m2m.example.com", error="invalid_token"`
		}
		return http.StatusOK, ""
	}
}

// barrier returns a function that returns once n calls have reached it.
func barrier(n int) func() {
	arrived, all := make(chan struct{}, n), make(chan struct{})
	go func() {
		for range n {
			<-arrived
		}
		close(all)
	}()
	return func() { arrived <- struct{}{}; <-all }
}

// mountedTokenSource is NewTokenSource on a Secret mounted for tokenURL, with secret-one.
func mountedTokenSource(t *testing.T, tokenURL string, opts ...TokenSourceOption) oauth2.TokenSource {
	t.Helper()
	dir := t.TempDir()
	mountSecret(t, dir, tokenURL, "secret-one", 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ts, err := NewTokenSource(ctx, dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func get(t *testing.T, hc *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// Requests sent together with a token that the resource server then refuses: the token source
// gets one new token, and each request succeeds on its one retry, with its body, while the
// caller's request is left as it was.
func TestRequestsRefusedTogetherCauseOneNewTokenAndEachSucceedsOnItsRetry(t *testing.T) {
	const n = 20
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	ts := mountedTokenSource(t, tokens.URL)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	rs := newResourceServer(t, refusing(func(tok string) bool { return tok == "token-1" }))
	rs.gate = barrier(n) // every request has been sent with token-1 before any refusal arrives
	hc := NewClient(context.Background(), ts)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			req, err := http.NewRequest(http.MethodPost, rs.URL, strings.NewReader(fmt.Sprintf("request %d", i)))
			if err != nil {
				errs <- err
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			_ = resp.Body.Close()
			switch {
			case resp.StatusCode != http.StatusOK:
				errs <- fmt.Errorf("request %d: status %d", i, resp.StatusCode)
			case req.Header.Get("Authorization") != "":
				errs <- fmt.Errorf("request %d: the caller's request got an Authorization header", i)
			default:
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := tokens.issued.Load(); got != 2 {
		t.Fatalf("the token server issued %d tokens, want the first and one new one", got)
	}
	var refused, retried []string
	for _, r := range rs.received() {
		switch r.token {
		case "token-1":
			refused = append(refused, r.body)
		case "token-2":
			retried = append(retried, r.body)
		default:
			t.Fatalf("the resource server got the token %q", r.token)
		}
	}
	slices.Sort(refused)
	slices.Sort(retried)
	if len(refused) != n || !slices.Equal(refused, retried) {
		t.Fatalf("refused bodies %q, retried bodies %q: want each of the %d requests once with each token", refused, retried, n)
	}
}

// A body that cannot be sent again: the refusal comes back as the resource server sent it, and
// the next request carries a new token.
func TestARequestWhoseBodyCannotBeSentAgainGetsTheRefusalAndTheNextRequestANewToken(t *testing.T) {
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	rs := newResourceServer(t, refusing(func(tok string) bool { return tok == "token-1" }))
	hc := NewClient(context.Background(), mountedTokenSource(t, tokens.URL))
	req, err := http.NewRequest(http.MethodPost, rs.URL, io.NopCloser(strings.NewReader("once")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !refusesToken(resp) || string(body) != "answered 401" {
		t.Fatalf("got %d %q %q, want the resource server's refusal", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	if n := len(rs.received()); n != 1 {
		t.Fatalf("the resource server got %d requests, want 1", n)
	}
	if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusOK {
		t.Fatalf("the next request: %d", resp.StatusCode)
	}
	if got := rs.received(); got[1].token != "token-2" {
		t.Fatalf("the next request carried %q, want a new token", got[1].token)
	}
}

// Only invalid_token says the token is bad: any other answer comes back as it is, the request is
// not sent again, and the token is kept.
func TestAnAnswerOtherThanInvalidTokenKeepsTheToken(t *testing.T) {
	for sentence, answer := range map[string]struct {
		status    int
		challenge string
	}{
		"a 401 without an error code":       {http.StatusUnauthorized, `Bearer realm="https://m2m.example.com"`},
		"a 401 without a challenge":         {http.StatusUnauthorized, ""},
		"a 401 invalid_request":             {http.StatusUnauthorized, `Bearer error="invalid_request"`},
		"a 403 insufficient_scope":          {http.StatusForbidden, `Bearer error="insufficient_scope", scope="read:invoices"`},
		"a 401 of another scheme":           {http.StatusUnauthorized, `DPoP error="invalid_token"`},
		"a 503 while the JWKS is away":      {http.StatusServiceUnavailable, ""},
		"a 403 that says invalid_token too": {http.StatusForbidden, `Bearer error="invalid_token"`},
	} {
		t.Run(sentence, func(t *testing.T) {
			tokens := newFakeTokenServer(t, "secret-one", time.Hour)
			rs := newResourceServer(t, func(string) (int, string) { return answer.status, answer.challenge })
			hc := NewClient(context.Background(), mountedTokenSource(t, tokens.URL))
			for range 2 {
				if resp := get(t, hc, rs.URL); resp.StatusCode != answer.status || resp.Header.Get("WWW-Authenticate") != answer.challenge {
					t.Fatalf("got %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
				}
			}
			if got := rs.received(); len(got) != 2 || got[1].token != "token-1" || tokens.issued.Load() != 1 {
				t.Fatalf("the resource server got %+v and the token server issued %d tokens: want two requests with the first token", got, tokens.issued.Load())
			}
		})
	}
}

// A resource server that refuses every token: each request is sent at most twice, and the token
// source asks for a new token at most once per minForcedRefreshGap, however many requests fail.
func TestAResourceServerThatRefusesEveryTokenGetsEachRequestAtMostTwiceAndOneNewTokenPerGap(t *testing.T) {
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	rs := newResourceServer(t, refusing(func(string) bool { return true }))
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	hc := NewClient(context.Background(), mountedTokenSource(t, tokens.URL, withNow(func() time.Time { return time.Unix(0, now.Load()) })))
	expect := func(requests int, issued int64) {
		t.Helper()
		if got := len(rs.received()); got != requests || tokens.issued.Load() != issued {
			t.Fatalf("the resource server got %d requests and the token server issued %d tokens, want %d and %d", got, tokens.issued.Load(), requests, issued)
		}
	}
	if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	expect(2, 2) // the first token, refused; a new one, refused too
	for range 10 {
		if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	expect(12, 2)
	now.Add(int64(minForcedRefreshGap - time.Millisecond))
	get(t, hc, rs.URL)
	expect(13, 2)
	now.Add(int64(time.Millisecond))
	get(t, hc, rs.URL)
	expect(15, 3)
}

// While no new token can be had, the refused token is returned as before (another resource
// server may accept it) and the refusal stands; once the token server answers, the next request
// gets a new token.
func TestARefusedTokenIsReplacedOnceTheTokenServerIssuesAgain(t *testing.T) {
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	ts := mountedTokenSource(t, tokens.URL)
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	rs := newResourceServer(t, refusing(func(tok string) bool { return tok == "token-1" }))
	hc := NewClient(context.Background(), ts)
	tokens.rotate("secret-the-workload-does-not-have")
	if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want the refusal", resp.StatusCode)
	}
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "token-1" {
		t.Fatalf("while the token server refuses: %v, %v; want the cached token", tok, err)
	}
	tokens.rotate("secret-one")
	if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d after the token server issued again", resp.StatusCode)
	}
	if got := rs.received(); len(got) != 2 || got[1].token != "token-2" {
		t.Fatalf("the resource server got %+v", got)
	}
}

// The wait for a token ends with the request's context, whether no token was cached yet or the
// cached one was refused.
func TestTheTransportReturnsWhenTheRequestsContextEndsWhileATokenIsOnItsWay(t *testing.T) {
	for sentence, refuseFirst := range map[string]bool{"no token yet": false, "a refused token": true} {
		t.Run(sentence, func(t *testing.T) {
			tokens := newStallingTokenServer(t)
			ts := mountedTokenSource(t, tokens.URL)
			if refuseFirst {
				if _, err := ts.Token(); err != nil {
					t.Fatal(err)
				}
			}
			tokens.stall.Store(true)
			rs := newResourceServer(t, refusing(func(string) bool { return true }))
			ctx, cancel := context.WithCancel(context.Background())
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, rs.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				resp, err := NewClient(context.Background(), ts).Do(req)
				if err == nil {
					_ = resp.Body.Close()
				}
				done <- err
			}()
			select {
			case <-tokens.arrived: // the token request is waiting on the token server
			case err := <-done:
				t.Fatalf("the request ended (%v) without waiting for a new token", err)
			}
			cancel()
			within(t, func() {
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Errorf("err %v, want the request's context's end", err)
				}
			})
			if got, want := len(rs.received()), map[bool]int{false: 0, true: 1}[refuseFirst]; got != want {
				t.Fatalf("the resource server got %d requests, want %d", got, want)
			}
		})
	}
}

// A token source that cannot drop a token: the refusal comes back, and the request is not sent
// again.
func TestWithATokenSourceThatCannotDropATokenTheRefusalComesBack(t *testing.T) {
	rs := newResourceServer(t, refusing(func(string) bool { return true }))
	hc := NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "static"}))
	if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusUnauthorized || !refusesToken(resp) {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := rs.received(); len(got) != 1 || got[0].token != "static" {
		t.Fatalf("the resource server got %+v", got)
	}
}

// The token is for the origin the caller asked: a redirect that the client follows to another
// host goes there without it; one within the origin carries it.
func TestARedirectToAnotherOriginCarriesNoToken(t *testing.T) {
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	elsewhere := newResourceServer(t, nil)
	var home *httptest.Server
	home = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/elsewhere":
			http.Redirect(w, r, elsewhere.URL+"/landed", http.StatusFound)
		case "/here":
			http.Redirect(w, r, home.URL+"/landed", http.StatusFound)
		default:
			_, _ = w.Write([]byte(r.Header.Get("Authorization")))
		}
	}))
	t.Cleanup(home.Close)
	hc := NewClient(context.Background(), mountedTokenSource(t, tokens.URL))
	get(t, hc, home.URL+"/elsewhere")
	if got := elsewhere.received(); len(got) != 1 || got[0].token != "" {
		t.Fatalf("the other origin got %+v, want one request without a token", got)
	}
	body, _ := io.ReadAll(get(t, hc, home.URL+"/here").Body)
	if string(body) != "Bearer token-1" {
		t.Fatalf("a redirect within the origin carried %q", body)
	}
}

// countingTransport counts the requests sent through it.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// As oauth2.NewClient, NewClient sends through the transport of ctx's oauth2.HTTPClient.
func TestNewClientSendsThroughTheContextsHTTPClient(t *testing.T) {
	rs := newResourceServer(t, nil)
	base := &countingTransport{}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base})
	get(t, NewClient(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "static"})), rs.URL)
	if base.n.Load() != 1 {
		t.Fatalf("%d requests through the context's transport, want 1", base.n.Load())
	}
}

// Each token source of the package can be told of a refusal, so that NewClient recovers with any.
func TestEveryTokenSourceOfThePackageCanDropARefusedToken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	mountSecret(t, dir, "http://127.0.0.1:1/oauth2/token", "secret-one", 1)
	saToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(saToken, []byte("a.b.c"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, build := range map[string]func() (oauth2.TokenSource, error){
		"NewTokenSource":               func() (oauth2.TokenSource, error) { return NewTokenSource(ctx, dir) },
		"NewServiceAccountTokenSource": func() (oauth2.TokenSource, error) { return NewServiceAccountTokenSource(ctx, dir, saToken) },
		"NewPrivateKeyTokenSource": func() (oauth2.TokenSource, error) {
			return NewPrivateKeyTokenSource(ctx, PrivateKeyClient{ClientID: "m2m-a", TokenURL: "http://127.0.0.1:1/oauth2/token", Issuer: "http://127.0.0.1:1", Key: key})
		},
	} {
		ts, err := build()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, ok := ts.(Invalidator); !ok {
			t.Errorf("%s returns a %T, which is not an Invalidator", name, ts)
		}
	}
}

// alwaysNewTokens is an Invalidator that drops every token it is told of, and gives a new token
// for every call after a drop.
type alwaysNewTokens struct {
	mu      sync.Mutex
	n       int
	dropped bool
}

func (a *alwaysNewTokens) Token() (*oauth2.Token, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 100 {
		return nil, errors.New("a transport that loops asked for 100 tokens")
	}
	if a.n == 0 || a.dropped {
		a.n, a.dropped = a.n+1, false
	}
	return &oauth2.Token{AccessToken: fmt.Sprintf("token-%d", a.n)}, nil
}

func (a *alwaysNewTokens) Invalidate(*oauth2.Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropped = true
}

// However readily the token source replaces tokens, a request that the resource server keeps
// refusing is sent twice, never more.
func TestARefusedRequestIsSentAtMostTwiceWhateverTheTokenSource(t *testing.T) {
	rs := newResourceServer(t, refusing(func(string) bool { return true }))
	hc := NewClient(context.Background(), &alwaysNewTokens{})
	for i := 1; i <= 3; i++ {
		if resp := get(t, hc, rs.URL); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := len(rs.received()); got != 2*i {
			t.Fatalf("after %d requests the resource server got %d, want %d", i, got, 2*i)
		}
	}
}

// A refusal of a token that was replaced already, arriving late (a slow request), does not drop
// its successor, however long after the last drop it comes.
func TestALateRefusalOfAReplacedTokenKeepsItsSuccessor(t *testing.T) {
	tokens := newFakeTokenServer(t, "secret-one", time.Hour)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	ts := mountedTokenSource(t, tokens.URL, withNow(func() time.Time { return time.Unix(0, now.Load()) }))
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	ts.(Invalidator).Invalidate(first)
	second, err := ts.Token()
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("after the drop: %v, %v; want a new token", second, err)
	}
	now.Add(int64(2 * minForcedRefreshGap))
	ts.(Invalidator).Invalidate(&oauth2.Token{AccessToken: first.AccessToken})
	if tok, err := ts.Token(); err != nil || tok.AccessToken != second.AccessToken || tokens.issued.Load() != 2 {
		t.Fatalf("after a late refusal of the first token: %v, %v, %d tokens issued; want the second kept", tok, err, tokens.issued.Load())
	}
}
