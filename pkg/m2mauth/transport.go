package m2mauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/oauth2"
)

// Invalidator is a token source that can be told that a resource server refused a token it
// returned. The token sources of NewTokenSource, NewServiceAccountTokenSource and
// NewPrivateKeyTokenSource are Invalidators; a client that does not send its requests through
// NewClient or NewTransport (a gRPC client, say) calls Invalidate itself when a resource server
// says invalid_token.
type Invalidator interface {
	oauth2.TokenSource
	// Invalidate drops tok, if Token still returns it, so that the next Token gets a new one.
	// It does nothing for a token already dropped or replaced, so that requests refused
	// together cause one new token. This package's sources drop a token at most once every 5
	// seconds, and return a dropped token while no new one can be had.
	Invalidate(tok *oauth2.Token)
}

// NewClient returns an HTTP client that sends every request with a bearer token from ts, as
// oauth2.NewClient does, and that recovers by itself when a resource server refuses the token
// (see NewTransport). Its transport, timeout, redirect policy and cookie jar are those of ctx's
// oauth2.HTTPClient, if it has one, else http.DefaultClient's. A ts that is not an Invalidator
// is wrapped in oauth2.ReuseTokenSource, as oauth2.NewClient wraps every source; this package's
// sources cache tokens themselves, and would not hear of refusals through that wrapper.
func NewClient(ctx context.Context, ts oauth2.TokenSource) *http.Client {
	cc := http.DefaultClient
	if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok {
		cc = hc
	}
	if _, ok := ts.(Invalidator); !ok && ts != nil {
		ts = oauth2.ReuseTokenSource(nil, ts)
	}
	return &http.Client{Transport: NewTransport(ts, cc.Transport), CheckRedirect: cc.CheckRedirect, Jar: cc.Jar, Timeout: cc.Timeout}
}

// NewTransport returns an http.RoundTripper that sends each request through base
// (http.DefaultTransport when nil) with Authorization: Bearer and a token from ts.
//
// When the answer is 401 with a Bearer challenge whose error is invalid_token (RFC 6750 §3.1) and
// ts is an Invalidator, it drops that token, and if ts then gives another one, sends the request
// once more with it, when its body can be sent again (it has none, or GetBody, as requests that
// http.NewRequest makes from a bytes.Buffer, bytes.Reader or strings.Reader have). Otherwise it
// returns the 401 as it came, and the next request gets the new token. A refused request is
// sent at most twice, whatever the answers. Any other answer, a 401 without invalid_token or a 403
// insufficient_scope included, is returned as it came, and the token kept: a new token would
// not change it.
//
// A DPoP-bound token (token_type DPoP, from a source with DPoP or DPoPKey) is sent as
// Authorization: DPoP with a fresh proof for the request (its method, its URL without query, and
// the token's hash), with the latest nonce the server sent in DPoP-Nonce. When the answer is 401
// with a DPoP challenge whose error is use_dpop_nonce and a DPoP-Nonce, the request is sent once
// more with a proof carrying that nonce, when its body can be sent again; that retry is the
// request's only one.
//
// It waits for a token no longer than the request's context allows (for a source of this package;
// another source is asked as oauth2.Transport asks it). A redirect to another scheme or host,
// which the client's redirect policy followed, is sent without a token.
//
// With a source made with PodCertificate, whose tokens are bound to the pod certificate, the
// requests present that certificate to servers that ask for one, when base is an
// *http.Transport (nil included; a clone is changed, never the caller's), and the idle
// connections are closed when the kubelet rotates the certificate, so that the new token goes
// with the new certificate. Another RoundTripper must present it itself (ClientCertificate).
func NewTransport(ts oauth2.TokenSource, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &transport{src: ts, base: base, callers: base}
	t.inv, _ = ts.(Invalidator)
	if h, ok := ts.(dpopKeyHolder); ok {
		t.key = h.dpopKey()
	}
	if h, ok := ts.(podCertHolder); ok && h.podCertificate() != nil {
		t.cert = h.podCertificate()
		t.base = withClientCertificate(base, t.cert)
	}
	return t
}

type transport struct {
	src oauth2.TokenSource
	inv Invalidator // src, when it is one
	// base is the transport requests go through: with a pod certificate, a clone of callers
	// that presents it, replaced at each rotation (under certMu); callers is the caller's.
	base, callers http.RoundTripper
	key           *dpopKey // src's DPoP key, when it has one
	// cert is src's pod certificate, when it has one; certSeen the x5t#S256 that the last
	// request saw.
	cert     *podCertificate
	certMu   sync.Mutex
	certSeen string
}

// rotated moves to a new transport when the pod certificate changed since the last request: the
// connections of the one before presented the old certificate, and one busy at the change (an
// HTTP/2 connection carries every request) would keep presenting it with tokens bound to the new
// one. The old transport's connections are closed as they go idle.
func (t *transport) rotated() {
	if t.cert == nil {
		return
	}
	thumb := t.cert.thumbprint()
	t.certMu.Lock()
	var old http.RoundTripper
	if t.certSeen != "" && t.certSeen != thumb {
		old = t.base
		t.base = withClientCertificate(t.callers, t.cert)
	}
	t.certSeen = thumb
	t.certMu.Unlock()
	if c, ok := old.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// current is the transport requests go through now.
func (t *transport) current() http.RoundTripper {
	if t.cert == nil {
		return t.base
	}
	t.certMu.Lock()
	defer t.certMu.Unlock()
	return t.base
}

// contextTokenSource is a token source whose wait for a token ends with a context.
type contextTokenSource interface {
	tokenContext(ctx context.Context) (*oauth2.Token, error)
}

func (t *transport) token(ctx context.Context) (*oauth2.Token, error) {
	if s, ok := t.src.(contextTokenSource); ok {
		return s.tokenContext(ctx)
	}
	return t.src.Token()
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if redirectedElsewhere(req) {
		return t.current().RoundTrip(req)
	}
	if t.src == nil {
		closeBody(req)
		return nil, errors.New("m2mauth: the transport has no token source")
	}
	t.rotated()
	ctx := req.Context()
	tok, err := t.token(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, req.Body, tok)
	if err == nil && isDPoP(tok) && refusesNonce(resp) {
		return t.retryWithNonce(req, resp, tok)
	}
	if err != nil || t.inv == nil || !(refusesToken(resp) || isDPoP(tok) && refusesDPoPToken(resp)) {
		return resp, err
	}
	t.inv.Invalidate(tok)
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !replayable {
		return resp, nil // the body is spent: the caller gets the refusal, the next request a new token
	}
	fresh, err := t.token(ctx)
	if err != nil && ctx.Err() != nil {
		discard(resp) // the caller has gone: its context's end is the answer
		return nil, err
	}
	if err != nil || sameToken(fresh, tok) {
		return resp, nil // no other token now: the refusal stands
	}
	body := req.Body
	if req.GetBody != nil {
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	discard(resp)
	return t.send(req, body, fresh)
}

// send sends a copy of req, with body and tok: a RoundTripper must not change the caller's request.
func (t *transport) send(req *http.Request, body io.ReadCloser, tok *oauth2.Token) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Body = body
	if isDPoP(tok) {
		return t.sendDPoP(r, tok)
	}
	tok.SetAuthHeader(r)
	return t.current().RoundTrip(r)
}

// CloseIdleConnections closes base's idle connections, for http.Client.CloseIdleConnections.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.current().(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// redirectedElsewhere reports whether req follows a redirect to another scheme or host than the
// request the caller made: the token is for that origin, as net/http keeps the caller's
// Authorization header for it.
func redirectedElsewhere(req *http.Request) bool {
	first := req
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	return !strings.EqualFold(first.URL.Scheme, req.URL.Scheme) || !strings.EqualFold(first.URL.Host, req.URL.Host)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// discard reads a little of a response that is not returned, so that its connection can serve
// the retry, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	_ = resp.Body.Close()
}
