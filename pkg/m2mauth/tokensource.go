package m2mauth

import (
	"context"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/m2m-dev/m2m-operator/pkg/jwk"
)

// Keys of the credentials Secret the manager writes (api/v1alpha1's SecretKey constants; a test
// keeps the two equal, so that this package need not import the API and its Kubernetes modules).
const (
	secretKeyClientID     = "client_id"
	secretKeyClientSecret = "client_secret"
	secretKeyPrivateKey   = "private_key"
	secretKeyTokenURL     = "token_url"
	// secretKeyPublicTokenURL: the public door's token URL, with one (PublicDoor).
	secretKeyPublicTokenURL = "public_token_url"
	secretKeyIssuer         = "issuer"
	secretKeyCA             = "ca.crt"
)

// TokenSourceOption configures NewTokenSource.
type TokenSourceOption func(*tokenSourceConfig)

type tokenSourceConfig struct {
	scopes  []string
	params  url.Values
	early   time.Duration
	timeout time.Duration
	now     func() time.Time
	// ownClient: the caller's context carries its own oauth2.HTTPClient, which is used as is.
	ownClient bool
	// publicDoor reads public_token_url instead of token_url.
	publicDoor bool
	// dpop, when set, is the key tokens are bound to (DPoP, DPoPKey).
	dpop *dpopKey
	// podCert, when set, is the pod certificate that authenticates the client (PodCertificate).
	podCert *podCertificate
	// bad collects options given values that cannot work.
	bad []string
}

// PublicDoor sends token requests to the Secret's public_token_url, the token endpoint under the
// issuer's public name, instead of its token_url, the in-cluster Service: for a program outside
// the cluster that holds a copy of the Secret. The Secret has public_token_url only when the
// install serves a public door; without it, every token request fails and says so. Tokens are
// the same through either door.
func PublicDoor() TokenSourceOption {
	return func(c *tokenSourceConfig) { c.publicDoor = true }
}

// RequestTimeout bounds each token request, connection included (default 10s). A token server
// that does not answer in time costs one caller that long once; while the cached token is valid,
// the others get it at once.
func RequestTimeout(d time.Duration) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.timeout = d }
}

// Scopes asks for these scopes; by default the token gets all of the client's.
func Scopes(scopes ...string) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.scopes = append(c.scopes, scopes...) }
}

// Audiences asks for a token for these audiences (the audience parameter).
func Audiences(audiences ...string) TokenSourceOption {
	return func(c *tokenSourceConfig) {
		for _, a := range audiences {
			c.params.Add("audience", a)
		}
	}
}

// RefreshBefore gets a new token this long before the current one expires (default 30s).
func RefreshBefore(d time.Duration) TokenSourceOption {
	return func(c *tokenSourceConfig) { c.early = d }
}

// NewTokenSource returns a token source for the client whose Secret is mounted at dir: the files
// client_id, token_url, and client_secret, or for a key pair the manager generated, private_key
// and issuer (each request then carries a fresh RFC 7523 assertion signed with the key). It
// follows the Secret from one kind to the other. When the Secret has ca.crt (the manager's CA,
// with an https issuer), it is trusted besides the system's roots, and read again when it
// changes. It reuses a token until RefreshBefore its expiry, then
// gets a new one, each request bounded by RequestTimeout; if that fails, it keeps serving the
// cached token until the token expires, and while one caller refreshes, the others get the cached
// token without waiting. It reads the files again when they change (the kubelet swaps the
// directory's ..data symlink when the Secret changes), and when the token server answers
// invalid_client it reads them again and retries once: a pod keeps working across a rotation
// without a restart. ctx bounds the file watch, and its oauth2.HTTPClient value, if any, is used
// for token requests instead of a client with connect and TLS timeouts. The source is an
// Invalidator: send requests with NewClient, and a token that a resource server refuses as
// invalid is replaced at once rather than at its expiry.
func NewTokenSource(ctx context.Context, dir string, opts ...TokenSourceOption) (oauth2.TokenSource, error) {
	return newTokenSource(ctx, dir, "", opts...)
}

// NewServiceAccountTokenSource is NewTokenSource for a client that authenticates with the pod's
// ServiceAccount instead of a secret: dir holds the client's client_id and token_url (its Secret
// has no client_secret), and tokenFile a projected ServiceAccount token whose audience is the
// token server's issuer URL. The token file is read again for every token request, since the
// kubelet replaces it before it expires; it is sent as an RFC 7523 client assertion with the
// client_id. Everything else is as for NewTokenSource.
func NewServiceAccountTokenSource(ctx context.Context, dir, tokenFile string, opts ...TokenSourceOption) (oauth2.TokenSource, error) {
	if tokenFile == "" {
		return nil, errors.New("m2mauth: NewServiceAccountTokenSource needs the path of a projected ServiceAccount token")
	}
	return newTokenSource(ctx, dir, tokenFile, opts...)
}

// tokenSourceSetup applies opts and returns the context token requests run in: ctx's values
// (an oauth2.HTTPClient) but not its end, with an HTTP client with timeouts unless ctx has one.
func tokenSourceSetup(ctx context.Context, opts []TokenSourceOption) (tokenSourceConfig, context.Context, error) {
	return tokenSourceSetupWith(ctx, opts, true)
}

// tokenSourceSetupWith is tokenSourceSetup; detach false keeps ctx's end for the requests too.
func tokenSourceSetupWith(ctx context.Context, opts []TokenSourceOption, detach bool) (tokenSourceConfig, context.Context, error) {
	cfg := tokenSourceConfig{params: url.Values{}, early: 30 * time.Second, timeout: 10 * time.Second, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.timeout <= 0 {
		return cfg, nil, fmt.Errorf("m2mauth: RequestTimeout(%s) is not positive", cfg.timeout)
	}
	if cfg.podCert != nil && cfg.dpop != nil {
		cfg.bad = append(cfg.bad, "PodCertificate and DPoP do not go together: the tokens are bound to the certificate")
	}
	if len(cfg.bad) > 0 {
		return cfg, nil, fmt.Errorf("m2mauth: %s", strings.Join(cfg.bad, "; "))
	}
	reqCtx := ctx
	if detach {
		reqCtx = context.WithoutCancel(ctx)
	}
	if _, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok {
		cfg.ownClient = true
	} else {
		reqCtx = context.WithValue(reqCtx, oauth2.HTTPClient, newHTTPClient(cfg.timeout))
	}
	return cfg, reqCtx, nil
}

func newTokenSource(ctx context.Context, dir, assertionFile string, opts ...TokenSourceOption) (oauth2.TokenSource, error) {
	// ctx bounds the file watch; RequestTimeout bounds each request.
	cfg, reqCtx, err := tokenSourceSetup(ctx, opts)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.podCert != nil && assertionFile != "":
		return nil, errors.New("m2mauth: PodCertificate goes with NewTokenSource: a pod authenticates with its certificate or its ServiceAccount token, not both")
	case cfg.podCert != nil && cfg.ownClient:
		return nil, errors.New("m2mauth: PodCertificate needs the source's own HTTP client, which presents the certificate: give no oauth2.HTTPClient in the context")
	case cfg.podCert != nil:
		if _, _, err := cfg.podCert.current(); err != nil {
			return nil, err
		}
	}
	if !cfg.ownClient {
		// The Secret's ca.crt, when it has one, is trusted besides the system's roots, and read
		// again when the manager rotates its CA (or adds it, moving the install to https).
		reqCtx = context.WithValue(reqCtx, oauth2.HTTPClient, withTLSFiles(newHTTPClient(cfg.timeout), filepath.Join(dir, secretKeyCA), true, cfg.podCert))
	}
	s := &fileTokenSource{ctx: reqCtx, dir: dir, cfg: cfg, assertionFile: assertionFile}
	if err := s.reload(); err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(dir); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				// Any change in the directory, the ..data swap included: read the files again.
				_ = s.reload()
			case <-w.Errors:
			}
		}
	}()
	return &cachingTokenSource{src: s, early: cfg.early, now: cfg.now, key: cfg.dpop, cert: cfg.podCert}, nil
}

// cachingTokenSource reuses a token until early before it expires. Unlike
// oauth2.ReuseTokenSource, a failed refresh falls back to the cached token while it is valid,
// callers do not queue behind a refresh in progress while the cached token is valid, and a token
// that a resource server refused can be dropped (Invalidate).
type cachingTokenSource struct {
	src   oauth2.TokenSource
	early time.Duration
	now   func() time.Time
	// key, when set, is the DPoP key the source's tokens are bound to.
	key *dpopKey
	// cert, when set, is the pod certificate the source's tokens are bound to; tokCert is the
	// x5t#S256 it had when tok was asked for. A token of a certificate the kubelet has since
	// replaced is replaced too: the transport presents the new one.
	cert    *podCertificate
	tokCert string

	mu         sync.Mutex
	tok        *oauth2.Token
	refreshing chan struct{} // closed when the refresh in progress ends; nil when none is
	lastErr    error         // why the last refresh failed
	// refused: a resource server refused tok. It is still the fallback when no new token can be
	// had: another resource server may accept it.
	refused bool
	// lastForced is when Invalidate last dropped a token.
	lastForced time.Time
	// notBefore: the token server answered 429 or 503 with Retry-After, and no request goes out
	// before this (RFC 6585, RFC 9110 §10.2.3).
	notBefore time.Time
}

// maxRetryAfter bounds how long a Retry-After keeps a token source from asking: a token server
// that names a day (the source-address limit may) is asked again after this.
const maxRetryAfter = 5 * time.Minute

// retryAfter is the wait that err, a failed token request, asks for: the Retry-After (seconds
// or an HTTP date) of a 429 or 503 answer, at most maxRetryAfter; 0 when there is none.
func retryAfter(err error, now time.Time) time.Duration {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return 0
	}
	if s := re.Response.StatusCode; s != http.StatusTooManyRequests && s != http.StatusServiceUnavailable {
		return 0
	}
	v := strings.TrimSpace(re.Response.Header.Get("Retry-After"))
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// minForcedRefreshGap is the least time between two drops of a refused token. The first refusal
// after a quiet spell gets a new token at once, which is what recovers a workload after an
// emergency signing-key rotation. A refusal of the token that this brought means that the
// resource server refuses what the token server issues (a verifier that has not fetched the new
// key yet, a wrong audience, a resource server that refuses every token), where asking again at
// once rarely helps: the gap bounds what a workload then costs the token server to one request
// per 5 seconds rather than one per request, and what a token server replica that signed with the
// old key a moment too long costs its callers to seconds.
const minForcedRefreshGap = 5 * time.Second

var _ Invalidator = (*cachingTokenSource)(nil)

func (c *cachingTokenSource) dpopKey() *dpopKey { return c.key }

func (c *cachingTokenSource) podCertificate() *podCertificate { return c.cert }

// boundToCurrent reports whether tok is bound to the current pod certificate, if any. Called
// with mu held.
func (c *cachingTokenSource) boundToCurrent() bool {
	return c.cert == nil || c.cert.thumbprint() == c.tokCert
}

// usable reports whether tok may still be sent at now, margin before its expiry.
func usable(tok *oauth2.Token, now time.Time, margin time.Duration) bool {
	return tok != nil && tok.AccessToken != "" && (tok.Expiry.IsZero() || now.Add(margin).Before(tok.Expiry))
}

// sameToken compares two tokens' access tokens in constant time.
func sameToken(a, b *oauth2.Token) bool {
	return a != nil && b != nil && subtle.ConstantTimeCompare([]byte(a.AccessToken), []byte(b.AccessToken)) == 1
}

// Invalidate drops tok, which a resource server refused, when it is still the cached token and
// no token was dropped in the last minForcedRefreshGap: the next Token gets a new one.
func (c *cachingTokenSource) Invalidate(tok *oauth2.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused || !sameToken(c.tok, tok) {
		return // dropped or replaced already: one refusal is enough for requests refused together
	}
	now := c.now()
	if !c.lastForced.IsZero() && now.Before(c.lastForced.Add(minForcedRefreshGap)) {
		return
	}
	c.refused, c.lastForced = true, now
}

func (c *cachingTokenSource) Token() (*oauth2.Token, error) {
	return c.tokenContext(context.Background())
}

// tokenContext is Token, waiting for a refresh no longer than ctx allows. With a ctx that cannot
// end, the refresh runs in the caller's goroutine, so that a panic in it reaches the caller; with
// one that can, on its own goroutine (bounded by the request timeout), so that the caller may
// leave while the others still get its result.
func (c *cachingTokenSource) tokenContext(ctx context.Context) (*oauth2.Token, error) {
	c.mu.Lock()
	now := c.now()
	if !c.refused && usable(c.tok, now, c.early) && c.boundToCurrent() {
		tok := c.tok
		c.mu.Unlock()
		return tok, nil
	}
	done := c.refreshing
	switch {
	case done == nil && now.Before(c.notBefore):
		// The token server asked to wait: the cached token while it lasts, else its answer.
		tok, err := c.tok, c.lastErr
		c.mu.Unlock()
		if usable(tok, now, 0) {
			return tok, nil
		}
		return nil, fmt.Errorf("m2mauth: no valid token, and the token server asked to wait until %s: %w", c.notBefore.Format(time.RFC3339), err)
	case done == nil:
		done = make(chan struct{})
		c.refreshing = done
		c.mu.Unlock()
		if ctx.Done() == nil {
			return c.refresh(done)
		}
		go func() {
			// refresh has recorded the panic as the refresh's error, which the waiters get.
			defer func() { _ = recover() }()
			_, _ = c.refresh(done)
		}()
	case !c.refused && usable(c.tok, now, 0):
		tok := c.tok
		c.mu.Unlock()
		return tok, nil
	default:
		c.mu.Unlock()
	}
	select {
	case <-done: // bounded by the request timeout of the refresh in progress
	case <-ctx.Done():
		return nil, fmt.Errorf("m2mauth: waiting for a token: %w", ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if usable(c.tok, c.now(), 0) {
		return c.tok, nil
	}
	return nil, fmt.Errorf("m2mauth: no valid token: the refresh in progress failed: %w", c.lastErr)
}

// refresh gets a new token into the cache and ends the refresh that done stands for. When that
// fails, it returns the cached token while it is valid, refused or not.
func (c *cachingTokenSource) refresh(done chan struct{}) (*oauth2.Token, error) {
	var tok *oauth2.Token
	var thumb string
	if c.cert != nil {
		// Before the request, whose handshake presents the certificate as it is then: a rotation
		// in between makes the token look stale once more, never a stale one fresh.
		thumb = c.cert.thumbprint()
	}
	err := errors.New("m2mauth: the token request panicked")
	defer func() {
		// Deferred, so that a panic in the request still ends the refresh, and no later caller
		// waits for it forever.
		c.mu.Lock()
		defer c.mu.Unlock()
		c.refreshing = nil
		close(done)
		if err == nil {
			c.tok, c.refused, c.tokCert = tok, false, thumb
		} else {
			c.lastErr = err
			if d := retryAfter(err, c.now()); d > 0 {
				c.notBefore = c.now().Add(d)
			}
		}
	}()
	tok, err = c.src.Token()
	if err == nil {
		return tok, nil
	}
	c.mu.Lock()
	cached := c.tok
	c.mu.Unlock()
	if usable(cached, c.now(), 0) {
		return cached, nil // the token server is away; the cached token is still good
	}
	return nil, err
}

// fileTokenSource gets a new token on every call, with the credentials last read from dir.
type fileTokenSource struct {
	ctx context.Context
	dir string
	cfg tokenSourceConfig
	// withIssuer also reads the issuer file (the Introspector needs it).
	withIssuer bool
	// assertionFile, when set, holds a ServiceAccount token sent as the client assertion instead
	// of a client secret.
	assertionFile string

	mu    sync.Mutex
	creds clientCreds
}

func (s *fileTokenSource) reload() error {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	id, err1 := read(secretKeyClientID)
	urlKey := secretKeyTokenURL
	if s.cfg.publicDoor {
		urlKey = secretKeyPublicTokenURL
	}
	tokenURL, err2 := read(urlKey)
	if errors.Is(err2, fs.ErrNotExist) && s.cfg.publicDoor {
		err2 = fmt.Errorf("%w: the install serves no public door (m2mauth.PublicDoor)", err2)
	}
	iss, err3 := read(secretKeyIssuer)
	if iss == "" && !s.withIssuer {
		err3 = nil // only a key pair and the Introspector need it
	}
	creds := clientCreds{Config: clientcredentials.Config{ClientID: id, TokenURL: tokenURL, Scopes: s.cfg.scopes, EndpointParams: s.cfg.params}, issuer: iss}
	var err4 error
	if s.cfg.podCert != nil {
		// client_id in the body and no secret: the certificate authenticates.
		creds.AuthStyle = oauth2.AuthStyleInParams
	} else if s.assertionFile == "" {
		// A generated key pair's private_key, if the Secret has one, else its client_secret.
		if pemKey, err := read(secretKeyPrivateKey); err == nil && pemKey != "" {
			if creds.key, creds.kid, creds.alg, err4 = parseKey(pemKey); err4 == nil && iss == "" {
				err4 = errors.New("a private_key needs the issuer file")
			}
		} else if creds.ClientSecret, err4 = read(secretKeyClientSecret); errors.Is(err4, fs.ErrNotExist) {
			// A client with no secret of its own authenticates with the pod's ServiceAccount.
			err4 = fmt.Errorf("the Secret has neither client_secret nor private_key; for a client that authenticates with its pod's ServiceAccount token, use NewServiceAccountTokenSource: %w", err4)
		}
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("reading the client credentials in %s: %w", s.dir, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creds = creds
	return nil
}

// parseKey reads a private_key and names it as the manager does: by its thumbprint.
func parseKey(pemKey string) (crypto.Signer, string, string, error) {
	key, pub, err := jwk.ParsePrivateKeyPEM([]byte(pemKey))
	if err != nil {
		return nil, "", "", fmt.Errorf("private_key: %w", err)
	}
	return key, pub.KeyID, pub.Algorithm, nil
}

func (s *fileTokenSource) issuer() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds.issuer
}

func (s *fileTokenSource) current() clientCreds {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// request gets a token with creds, bounded by the request timeout.
func (s *fileTokenSource) request(creds clientCreds) (*oauth2.Token, error) {
	return requestToken(s.ctx, s.cfg, creds, s.assertionFile)
}

// Token gets a token; after invalid_client it reads the files again and, if they changed,
// retries once: the watch may not have seen the new Secret yet.
func (s *fileTokenSource) Token() (*oauth2.Token, error) {
	creds := s.current()
	tok, err := s.request(creds)
	var re *oauth2.RetrieveError
	if err == nil || !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		return tok, err
	}
	if rerr := s.reload(); rerr != nil {
		return nil, errors.Join(err, rerr)
	}
	if fresh := s.current(); !fresh.same(creds) {
		return s.request(fresh)
	}
	return nil, err
}
