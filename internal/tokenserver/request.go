package tokenserver

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// tokenRequest is a parsed token (or introspection) request. It holds the client secret: never
// log it.
type tokenRequest struct {
	// limited: the request is for a token, which the issuance limit governs (introspection's
	// are not).
	limited bool
	// recordJTI, when set, keeps the jti of the request's assertion in the replay cache and
	// reports whether it was new: authentication left it to the token endpoint, since the client
	// was over its issuance limit when it was authenticated.
	recordJTI    func() bool
	clientID     string
	clientSecret string
	grantType    string
	scopes       []string
	audiences    []string
	resources    []string
	// token is the introspection request's token parameter.
	token string
	// assertionType and assertion are RFC 7521 client assertion parameters.
	assertionType, assertion string
	// assertionIssuer is the assertion's iss, unverified: it only chooses the authenticator
	// (authenticatorOrder) and the keys that verify the assertion.
	assertionIssuer string
	// peerCertificate is the client certificate of the connection, verified by the TLS listener
	// against the pod-client CA; nil without one, or when the server verifies none.
	peerCertificate *x509.Certificate
	// certificateThumbprint is set by tls_client_auth once it accepts peerCertificate: the token's
	// cnf x5t#S256 (RFC 8705 §3.1).
	certificateThumbprint string

	// The flags stay together, so that the struct keeps to one allocation size class.

	// basic says the credentials came in the Authorization header.
	basic bool
	// secretGiven says the body carried a client_secret parameter, even an empty one.
	secretGiven bool
	// scopeGiven says a non-empty scope parameter was sent.
	scopeGiven bool
	// assertionGiven says either client assertion parameter was sent.
	assertionGiven bool
	// clientIDFromAssertion says client_id was not sent and was taken from the assertion's iss.
	clientIDFromAssertion bool
}

// JWTBearerAssertion is the client_assertion_type of RFC 7523 §2.2.
const JWTBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// singleParams may appear at most once (RFC 6749 §3.2).
var singleParams = []string{"grant_type", "client_id", "client_secret", "scope", "token", "token_type_hint", "client_assertion_type", "client_assertion"}

// parseRequest reads a POST with a form or JSON body and client credentials in the body or in
// HTTP Basic. It returns an oauthError for anything malformed.
func parseRequest(w http.ResponseWriter, r *http.Request) (*tokenRequest, *oauthError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, newError(reasonMethod, "the method must be POST")
	}
	if r.URL.RawQuery != "" {
		query := r.URL.Query()
		for _, p := range []string{"client_secret", "client_id", "grant_type", "scope", "token", "client_assertion"} {
			if query.Has(p) {
				// Parameters in the URL end up in access logs; a secret must never travel there.
				return nil, newError(reasonQueryParameters, "parameters must be sent in the request body, not in the URL")
			}
		}
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, newError(reasonBodyTooLarge, "the request body is larger than 64 KiB")
		}
		return nil, newError(reasonBodyUnreadable, "the request body could not be read")
	}

	mediaType, ok := mediaTypeOf(r.Header.Get("Content-Type"))
	if !ok {
		return nil, newError(reasonContentType, "the Content-Type must be application/x-www-form-urlencoded or application/json")
	}
	var req *tokenRequest
	var bad *oauthError
	switch mediaType {
	case "application/x-www-form-urlencoded":
		req, bad = parseForm(body)
	case "application/json":
		req, bad = parseJSON(body)
	default:
		return nil, newError(reasonContentType, "the Content-Type must be application/x-www-form-urlencoded or application/json")
	}
	if bad != nil {
		return nil, bad
	}
	if bad := applyBasic(r, req); bad != nil {
		return nil, bad
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		req.peerCertificate = r.TLS.VerifiedChains[0][0]
	}
	if req.assertionGiven {
		switch {
		case req.basic || req.secretGiven:
			return nil, newError(reasonTwoAuthMethods, "the client authenticated with both a client assertion and a client secret")
		case req.assertionType != JWTBearerAssertion:
			return nil, newError(reasonAssertionType, "client_assertion_type must be "+JWTBearerAssertion)
		case req.assertion == "":
			return nil, newError(reasonAssertionMissing, "client_assertion is required with client_assertion_type")
		}
		req.assertionIssuer = unverifiedIssuer(req.assertion)
		if req.clientID == "" {
			// RFC 7523 §3: a client's own assertion names it in iss. Workload assertions need
			// client_id, which authentication checks.
			req.clientID, req.clientIDFromAssertion = req.assertionIssuer, true
		}
	}
	return req, nil
}

// presizedBody bounds the buffer readBody makes before the body arrives: a connection that
// declares 64 KiB and sends nothing holds no more than this.
const presizedBody = 4 << 10

// readBody reads the body, at most MaxBodyBytes of it, into one buffer of the size the request
// declares (when it declares one up to presizedBody), instead of the doublings of io.ReadAll.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limited := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if r.ContentLength <= 0 || r.ContentLength > presizedBody {
		return io.ReadAll(limited)
	}
	// One byte more than declared, to see the end of the body without another buffer.
	buf := make([]byte, r.ContentLength+1)
	n := 0
	for n < len(buf) {
		m, err := limited.Read(buf[n:])
		n += m
		switch {
		case err == io.EOF:
			return buf[:n], nil
		case err != nil:
			// A body cut short of its Content-Length is net/http's io.ErrUnexpectedEOF: an
			// error, as io.ReadAll would report it, not a shorter request.
			return nil, err
		}
	}
	// Longer than declared: net/http's body reader stops at Content-Length, but a Body set by
	// other code need not. The rest is read and bounded like any body.
	rest, err := io.ReadAll(limited)
	return append(buf, rest...), err
}

// mediaTypeOf returns the media type of a Content-Type header value, lower case, without its
// parameters; false when there is none or it does not parse. The two types clients send most,
// exactly as they are usually written, skip the parser and the map it allocates.
func mediaTypeOf(contentType string) (string, bool) {
	switch contentType {
	case "":
		return "", false
	case "application/x-www-form-urlencoded", "application/json":
		return contentType, true
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", false
	}
	return mediaType, true
}

func parseForm(body []byte) (*tokenRequest, *oauthError) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, newError(reasonFormSyntax, "the form body is not valid application/x-www-form-urlencoded")
	}
	for _, p := range singleParams {
		if len(values[p]) > 1 {
			return nil, newError(reasonRepeatedParameter, "the parameter "+p+" appears more than once")
		}
	}
	_, secretGiven := values["client_secret"]
	_, typeGiven := values["client_assertion_type"]
	_, assertionGiven := values["client_assertion"]
	req := &tokenRequest{
		assertionType:  values.Get("client_assertion_type"),
		assertion:      values.Get("client_assertion"),
		assertionGiven: typeGiven || assertionGiven,
		secretGiven:    secretGiven,
		clientID:       values.Get("client_id"),
		clientSecret:   values.Get("client_secret"),
		grantType:      values.Get("grant_type"),
		token:          values.Get("token"),
		audiences:      values["audience"],
		resources:      values["resource"],
	}
	return req, req.setScope(values.Get("scope"))
}

// jsonParams are the parameters a JSON body may carry, as in Stytch's token endpoint. audience
// and resource may be a string or an array of strings; the others are strings.
var jsonParams = map[string]bool{
	"client_id": true, "client_secret": true, "grant_type": true, "scope": true,
	"audience": true, "resource": true, "token": true, "token_type_hint": true,
	"client_assertion_type": true, "client_assertion": true,
}

// parseJSON reads one JSON object. A request means one thing: a repeated key, or a key that
// differs from a parameter's name only in case, is refused rather than resolved (Go's decoder
// would take the last one, and match names ignoring case). Other unknown keys are ignored, as
// RFC 6749 §3.2 asks.
func parseJSON(body []byte) (*tokenRequest, *oauthError) {
	params, bad := jsonObject(body)
	if bad != nil {
		return nil, bad
	}
	str := func(name string) (string, *oauthError) {
		raw, ok := params[name]
		if !ok || string(raw) == "null" {
			return "", nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", newError(reasonJSONSyntax, "the parameter "+name+" must be a string")
		}
		return v, nil
	}
	req := &tokenRequest{}
	_, req.secretGiven = params["client_secret"]
	_, typeGiven := params["client_assertion_type"]
	_, assertionGiven := params["client_assertion"]
	req.assertionGiven = typeGiven || assertionGiven
	var scope string
	for _, p := range [...]struct {
		name string
		dst  *string
	}{{"client_id", &req.clientID}, {"client_secret", &req.clientSecret}, {"grant_type", &req.grantType}, {"token", &req.token}, {"scope", &scope},
		{"client_assertion_type", &req.assertionType}, {"client_assertion", &req.assertion}} {
		if *p.dst, bad = str(p.name); bad != nil {
			return nil, bad
		}
	}
	if req.audiences, bad = stringOrList("audience", params["audience"]); bad != nil {
		return nil, bad
	}
	if req.resources, bad = stringOrList("resource", params["resource"]); bad != nil {
		return nil, bad
	}
	return req, req.setScope(scope)
}

// jsonObject decodes body as exactly one JSON object into its members, refusing repeated keys
// and keys that name a parameter in another case.
func jsonObject(body []byte) (map[string]json.RawMessage, *oauthError) {
	syntax := newError(reasonJSONSyntax, "the JSON body must be one object whose parameters are strings")
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, syntax
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntax
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, syntax
		}
		if _, dup := out[key]; dup {
			return nil, newError(reasonRepeatedParameter, "the parameter "+key+" appears more than once")
		}
		if lower := strings.ToLower(key); lower != key && jsonParams[lower] {
			return nil, newError(reasonParameterCase, "parameter names are lower case: "+lower)
		}
		out[key] = value
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, syntax
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, newError(reasonJSONSyntax, "the JSON body must hold one object")
	}
	return out, nil
}

func stringOrList(name string, raw json.RawMessage) ([]string, *oauthError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err == nil {
		return many, nil
	}
	return nil, newError(reasonJSONSyntax, "the parameter "+name+" must be a string or an array of strings")
}

// setScope splits the space-delimited scope parameter (RFC 6749 §3.3).
func (req *tokenRequest) setScope(scope string) *oauthError {
	if scope == "" {
		return nil
	}
	req.scopeGiven = true
	// A few scopes are deduplicated by looking back, without a map; a body of 64 KiB can hold
	// thousands, which a map keeps linear.
	var seen map[string]bool
	for s := range strings.SplitSeq(scope, " ") {
		if s == "" {
			continue // tolerate doubled spaces
		}
		if !validScopeToken(s) {
			return newError(reasonScopeSyntax, "the scope parameter holds a character that no scope may contain")
		}
		switch {
		case seen != nil:
			if seen[s] {
				continue
			}
			seen[s] = true
		case slices.Contains(req.scopes, s):
			continue
		case len(req.scopes) == scopesWithoutMap:
			seen = make(map[string]bool, 2*scopesWithoutMap)
			for _, have := range req.scopes {
				seen[have] = true
			}
			seen[s] = true
		}
		req.scopes = append(req.scopes, s)
	}
	return nil
}

// scopesWithoutMap is how many distinct scopes setScope deduplicates without a map.
const scopesWithoutMap = 16

// validScopeToken: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return s != ""
}

// applyBasic takes credentials from an Authorization: Basic header, form-decoding the ID and
// secret (RFC 6749 §2.3.1). Credentials in the header and a secret in the body at once are refused.
func applyBasic(r *http.Request, req *tokenRequest) *oauthError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil
	}
	scheme, _, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return newError(reasonAuthScheme, "only HTTP Basic client authentication is supported in the Authorization header")
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return invalidClient(reasonBasicSyntax)
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		return invalidClient(reasonBasicEncoding)
	}
	if req.secretGiven {
		// Even an empty one: a request with two credentials means two things.
		return newError(reasonTwoAuthMethods, "the client authenticated with both HTTP Basic and a client_secret in the body")
	}
	if req.clientID != "" && req.clientID != id {
		return newError(reasonTwoAuthMethods, "the client_id in the body differs from the one in HTTP Basic")
	}
	req.clientID, req.clientSecret, req.basic = id, secret, true
	return nil
}
