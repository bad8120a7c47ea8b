package tokenserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 64 << 10

// tokenRequest is a parsed token (or introspection) request. It holds the client secret: never
// log it.
type tokenRequest struct {
	clientID     string
	clientSecret string
	// basic says the credentials came in the Authorization header.
	basic     bool
	grantType string
	// scopeGiven says a non-empty scope parameter was sent.
	scopeGiven bool
	scopes     []string
	audiences  []string
	resources  []string
	// token is the introspection request's token parameter.
	token string
}

// singleParams may appear at most once (RFC 6749 §3.2).
var singleParams = []string{"grant_type", "client_id", "client_secret", "scope", "token", "token_type_hint"}

// parseRequest reads a POST with a form or JSON body and client credentials in the body or in
// HTTP Basic. It returns an oauthError for anything malformed.
func parseRequest(w http.ResponseWriter, r *http.Request) (*tokenRequest, *oauthError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, newError(ErrInvalidRequest, http.StatusMethodNotAllowed, "method", "the method must be POST")
	}
	for _, p := range []string{"client_secret", "client_id", "grant_type", "scope", "token"} {
		if r.URL.Query().Has(p) {
			// Parameters in the URL end up in access logs; a secret must never travel there.
			return nil, badRequest("query_parameters", "parameters must be sent in the request body, not in the URL")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, newError(ErrInvalidRequest, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than 64 KiB")
		}
		return nil, badRequest("body_unreadable", "the request body could not be read")
	}

	ct := r.Header.Get("Content-Type")
	mediaType, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		return nil, badRequest("content_type", "the Content-Type must be application/x-www-form-urlencoded or application/json")
	}
	var req *tokenRequest
	var bad *oauthError
	switch mediaType {
	case "application/x-www-form-urlencoded":
		req, bad = parseForm(body)
	case "application/json":
		req, bad = parseJSON(body)
	default:
		return nil, badRequest("content_type", "the Content-Type must be application/x-www-form-urlencoded or application/json")
	}
	if bad != nil {
		return nil, bad
	}
	if bad := applyBasic(r, req); bad != nil {
		return nil, bad
	}
	return req, nil
}

func parseForm(body []byte) (*tokenRequest, *oauthError) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("form_syntax", "the form body is not valid application/x-www-form-urlencoded")
	}
	for _, p := range singleParams {
		if len(values[p]) > 1 {
			return nil, badRequest("repeated_parameter", "the parameter "+p+" appears more than once")
		}
	}
	req := &tokenRequest{
		clientID:     values.Get("client_id"),
		clientSecret: values.Get("client_secret"),
		grantType:    values.Get("grant_type"),
		token:        values.Get("token"),
		audiences:    values["audience"],
		resources:    values["resource"],
	}
	return req, req.setScope(values.Get("scope"))
}

// jsonRequest is the JSON body Stytch's token endpoint takes. audience and resource may be a
// string or an array of strings.
type jsonRequest struct {
	ClientID     *string         `json:"client_id"`
	ClientSecret *string         `json:"client_secret"`
	GrantType    *string         `json:"grant_type"`
	Scope        *string         `json:"scope"`
	Audience     json.RawMessage `json:"audience"`
	Resource     json.RawMessage `json:"resource"`
	Token        *string         `json:"token"`
}

func parseJSON(body []byte) (*tokenRequest, *oauthError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var j jsonRequest
	if err := dec.Decode(&j); err != nil {
		return nil, badRequest("json_syntax", "the JSON body must be an object whose parameters are strings")
	}
	if dec.More() {
		return nil, badRequest("json_syntax", "the JSON body must hold one object")
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	req := &tokenRequest{
		clientID:     str(j.ClientID),
		clientSecret: str(j.ClientSecret),
		grantType:    str(j.GrantType),
		token:        str(j.Token),
	}
	var bad *oauthError
	if req.audiences, bad = stringOrList("audience", j.Audience); bad != nil {
		return nil, bad
	}
	if req.resources, bad = stringOrList("resource", j.Resource); bad != nil {
		return nil, bad
	}
	return req, req.setScope(str(j.Scope))
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
	return nil, badRequest("json_syntax", "the parameter "+name+" must be a string or an array of strings")
}

// setScope splits the space-delimited scope parameter (RFC 6749 §3.3).
func (req *tokenRequest) setScope(scope string) *oauthError {
	if scope == "" {
		return nil
	}
	req.scopeGiven = true
	seen := map[string]bool{}
	for _, s := range strings.Split(scope, " ") {
		if s == "" {
			continue // tolerate doubled spaces
		}
		if !validScopeToken(s) {
			return invalidScope("scope_syntax", "the scope parameter holds a character that no scope may contain")
		}
		if !seen[s] {
			seen[s] = true
			req.scopes = append(req.scopes, s)
		}
	}
	return nil
}

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
		return badRequest("auth_scheme", "only HTTP Basic client authentication is supported in the Authorization header")
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return invalidClient("basic_syntax")
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		return invalidClient("basic_encoding")
	}
	if req.clientSecret != "" {
		return badRequest("two_auth_methods", "the client authenticated with both HTTP Basic and a client_secret in the body")
	}
	if req.clientID != "" && req.clientID != id {
		return badRequest("two_auth_methods", "the client_id in the body differs from the one in HTTP Basic")
	}
	req.clientID, req.clientSecret, req.basic = id, secret, true
	return nil
}
