package tokenserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzParseRequest feeds arbitrary bodies, content types and Authorization headers to the
// request parser: it must never panic, and must either parse or give an OAuth error.
func FuzzParseRequest(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=a&client_secret=b&scope=x%20y", "")
	f.Add("application/json", `{"client_id":"a","client_secret":"b","audience":["x","y"],"resource":"https://r"}`, "")
	f.Add("application/json", `{"audience": 5}`, "Basic YTpi")
	f.Add("multipart/form-data; boundary=x", "--x--", "Bearer t")
	f.Fuzz(func(t *testing.T, contentType, body, authorization string) {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		if authorization != "" {
			r.Header.Set("Authorization", authorization)
		}
		req, bad := parseRequest(httptest.NewRecorder(), r)
		if (req == nil) == (bad == nil) {
			t.Fatalf("got request %v and error %v; want exactly one", req, bad)
		}
		if bad != nil && (bad.status < 400 || bad.status >= 500 || bad.Code == "") {
			t.Fatalf("error %+v is not a 4xx OAuth error", bad)
		}
		if req != nil {
			for _, s := range req.scopes {
				if !validScopeToken(s) {
					t.Fatalf("scope %q passed parsing", s)
				}
			}
		}
	})
}
