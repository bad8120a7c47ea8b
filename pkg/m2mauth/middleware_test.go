package m2mauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/m2m-dev/m2m-operator/internal/signingkeys"
)

func TestMiddlewareAnswersRFC6750ErrorsAndPassesTheClaimsOn(t *testing.T) {
	ec := genKey(t, signingkeys.ES256)
	srv := newJWKSServer(t, ec)
	v := newTestVerifier(t, srv, unlimitedRefresh())
	var seen *Claims
	h := Middleware(v, RequiredScopes("read:users"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = ClaimsFromContext(r.Context())
	}))
	good := mint(t, ec, goodClaims(srv.URL), nil)
	lacking := mint(t, ec, with(goodClaims(srv.URL), "scope", "write:users"), nil)
	// Signed by a key the JWKS no longer has, as after an emergency signing-key rotation: the
	// challenge that NewClient's transport replaces the token for.
	removed := mint(t, genKey(t, signingkeys.ES256), with(goodClaims(srv.URL), "scope", "read:users"), nil)
	for sentence, tc := range map[string]struct {
		authorization string
		status        int
		challenge     string
	}{
		"no token asks for one, without an error code": {"", 401, `Bearer realm="`},
		"a Basic header asks for a bearer token":       {"Basic YTpi", 401, `Bearer realm="`},
		"an invalid token is invalid_token":            {"Bearer not.a.token", 401, `error="invalid_token"`},
		"a token of a removed key is invalid_token":    {"Bearer " + removed, 401, `error="invalid_token"`},
		"a token lacking the scope is forbidden":       {"Bearer " + lacking, 403, `error="insufficient_scope", scope="read:users"`},
		"a good token reaches the handler":             {"Bearer " + good, 200, ""},
	} {
		t.Run(sentence, func(t *testing.T) {
			seen = nil
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.authorization != "" {
				r.Header.Set("Authorization", tc.authorization)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) || (tc.status == 401 && tc.authorization == "" && strings.Contains(got, "error=")) {
				t.Fatalf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
			}
			if (tc.status == 200) != (seen != nil) {
				t.Fatalf("the handler saw claims %v", seen)
			}
			if seen != nil && seen.ClientID != "m2m-a" {
				t.Fatalf("claims %+v", seen)
			}
		})
	}
}
