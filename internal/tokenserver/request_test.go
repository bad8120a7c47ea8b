package tokenserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
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

// bodyOf is a request body that returns data and then err instead of io.EOF.
type bodyOf struct {
	data []byte
	err  error
}

func (b *bodyOf) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (*bodyOf) Close() error { return nil }

func TestReadBody(t *testing.T) {
	body := "grant_type=client_credentials&client_id=a&client_secret=b"
	for _, tc := range []struct {
		name          string
		declared      int64
		body          string
		end           error
		want          string
		wantErr       bool
		wantMaxBytesE bool
	}{
		{"a body of exactly its declared length is read whole", int64(len(body)), body, io.EOF, body, false, false},
		{"a body of undeclared length is read whole", -1, body, io.EOF, body, false, false},
		{"a body cut off before its declared length is an error, not a shorter request", int64(len(body)) + 10, body, io.ErrUnexpectedEOF, "", true, false},
		{"a body longer than it declares is read to its end", 5, body, io.EOF, body, false, false},
		{"a body that declares more than is read ahead of it is read whole", presizedBody + 1, strings.Repeat("a", presizedBody+1), io.EOF, strings.Repeat("a", presizedBody+1), false, false},
		{"a body longer than it declares is still bounded at 64 KiB", 5, strings.Repeat("a", MaxBodyBytes+1), io.EOF, "", true, true},
		{"a body that declares more than 64 KiB is bounded", MaxBodyBytes + 1, strings.Repeat("a", MaxBodyBytes+1), io.EOF, "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", nil)
			r.Body, r.ContentLength = &bodyOf{data: []byte(tc.body), err: tc.end}, tc.declared
			got, err := readBody(httptest.NewRecorder(), r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) != tc.wantMaxBytesE {
				t.Fatalf("err = %v, want *http.MaxBytesError: %v", err, tc.wantMaxBytesE)
			}
			if err == nil && string(got) != tc.want {
				t.Fatalf("read %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMediaTypeOf(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, want string
		ok                      bool
	}{
		{"a form type as clients write it is a form", "application/x-www-form-urlencoded", "application/x-www-form-urlencoded", true},
		{"JSON as clients write it is JSON", "application/json", "application/json", true},
		{"a charset parameter is dropped", "application/json; charset=utf-8", "application/json", true},
		{"a type in upper case is lowered", "Application/X-WWW-Form-URLEncoded", "application/x-www-form-urlencoded", true},
		{"no Content-Type is none", "", "", false},
		{"a malformed Content-Type is none", "application/json; =", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := mediaTypeOf(tc.contentType)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("mediaTypeOf(%q) = %q, %v; want %q, %v", tc.contentType, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestSetScope(t *testing.T) {
	many := func(n int, repeat bool) (scope string, want []string) {
		for i := range n {
			s := fmt.Sprintf("scope:%d", i)
			want = append(want, s)
			scope += s + " "
			if repeat {
				scope += s + " "
			}
		}
		return scope, want
	}
	manyScope, manyWant := many(3*scopesWithoutMap, true)
	edgeScope, edgeWant := many(scopesWithoutMap+1, false)
	for _, tc := range []struct {
		name, scope string
		want        []string
	}{
		{"a repeated scope is granted once", "read read write read", []string{"read", "write"}},
		{"doubled spaces are tolerated", "read  write", []string{"read", "write"}},
		{"scopes keep the order of their first mention", "write read write", []string{"write", "read"}},
		{"past the few deduplicated without a map, repeats are still dropped", manyScope, manyWant},
		{"a repeat of the scopes before the map is dropped after it", edgeScope + "scope:0 scope:" + fmt.Sprint(scopesWithoutMap), edgeWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &tokenRequest{}
			if bad := req.setScope(tc.scope); bad != nil {
				t.Fatal(bad)
			}
			if !slices.Equal(req.scopes, tc.want) {
				t.Fatalf("scopes %q, want %q", req.scopes, tc.want)
			}
		})
	}
}
