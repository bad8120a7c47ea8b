package m2mauth

import (
	"net/http"
	"strings"
	"testing"
)

// RFC 6750 §3.1 and RFC 9110 §11.6.1: only the error parameter of a Bearer challenge says that a
// token is invalid; schemes and parameter names are case-insensitive, values may be quoted, and
// a field may hold several challenges, as may several fields.
func TestOnlyTheErrorParameterOfABearerChallengeRefusesTheToken(t *testing.T) {
	for sentence, tc := range map[string]struct {
		status int
		fields []string
		want   bool
	}{
		"the middleware's challenge refuses it":                  {401, []string{`Bearer realm="https://m2m.example.com", error="invalid_token"`}, true},
		"the scheme is case-insensitive":                         {401, []string{`bEARER error="invalid_token"`}, true},
		"parameter names are case-insensitive":                   {401, []string{`Bearer ERROR="invalid_token"`}, true},
		"an unquoted value counts":                               {401, []string{`Bearer error=invalid_token`}, true},
		"whitespace around the equals sign counts":               {401, []string{"Bearer realm = \"a\" ,\terror =\t\"invalid_token\""}, true},
		"a Bearer challenge after another scheme's counts":       {401, []string{`Basic realm="a", Bearer realm="b", error="invalid_token"`}, true},
		"a Bearer challenge in a second field counts":            {401, []string{`Basic realm="a"`, `Bearer error="invalid_token"`}, true},
		"a quoted comma and escaped quote do not end the value":  {401, []string{`Bearer realm="a, b=\"c\"", error="invalid_token"`}, true},
		"an escaped character in the value is itself":            {401, []string{`Bearer error="invalid\_token"`}, true},
		"after a token68 challenge, a Bearer challenge counts":   {401, []string{`Negotiate abc/+def==, Bearer error="invalid_token"`}, true},
		"empty list elements are skipped":                        {401, []string{`, Bearer ,, error="invalid_token",`}, true},
		"a 401 without an error keeps the token":                 {401, []string{`Bearer realm="a"`}, false},
		"a 401 without a challenge keeps the token":              {401, nil, false},
		"invalid_request keeps the token":                        {401, []string{`Bearer error="invalid_request"`}, false},
		"a 403 insufficient_scope keeps the token":               {403, []string{`Bearer error="insufficient_scope", scope="read:invoices"`}, false},
		"a 403 with invalid_token keeps it":                      {403, []string{`Bearer error="invalid_token"`}, false},
		"another scheme's invalid_token keeps the token":         {401, []string{`DPoP error="invalid_token"`}, false},
		"a scheme that only starts with Bearer keeps the token":  {401, []string{`Bearerx error="invalid_token"`}, false},
		"invalid_token inside a quoted realm keeps the token":    {401, []string{`Bearer realm="error=\"invalid_token\""`}, false},
		"a value that only starts with invalid_token keeps it":   {401, []string{`Bearer error="invalid_token2"`}, false},
		"the value is case-sensitive":                            {401, []string{`Bearer error="INVALID_TOKEN"`}, false},
		"the first of repeated parameters counts":                {401, []string{`Bearer error="invalid_request", error="invalid_token"`}, false},
		"an unterminated quote ends the reading":                 {401, []string{`Bearer realm="a, error="invalid_token`}, false},
		"what follows a malformed parameter is not read":         {401, []string{`Bearer realm=, error="invalid_token"`}, false},
		"the error of another challenge's parameters is its own": {401, []string{`Basic error="invalid_token", Bearer realm="a"`}, false},
	} {
		t.Run(sentence, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			for _, f := range tc.fields {
				resp.Header.Add("WWW-Authenticate", f)
			}
			if got := refusesToken(resp); got != tc.want {
				t.Fatalf("refusesToken(%d %q) = %v, want %v (challenges %+v)", tc.status, tc.fields, got, tc.want, parseChallenges(tc.fields))
			}
		})
	}
}

// A resource server's header is hostile input: any bytes parse without a panic, and a Bearer
// challenge whose error is any quoted value reads back as that value.
func FuzzParseChallenges(f *testing.F) {
	f.Add(`Basic realm="a", Bearer realm="b", error="invalid_token"`, "invalid_token")
	f.Add(`Negotiate abc==, Bearer`, `a"b\c`)
	f.Add(`Bearer realm="\`, "")
	f.Fuzz(func(t *testing.T, field, value string) {
		for _, c := range parseChallenges([]string{field}) {
			if c.scheme == "" || strings.IndexFunc(c.scheme, func(r rune) bool { return r > 127 || !isTchar(byte(r)) }) >= 0 {
				t.Fatalf("%q parsed to the scheme %q", field, c.scheme)
			}
		}
		if strings.ContainsAny(value, "\r\n") || strings.IndexFunc(value, func(r rune) bool { return r > 127 }) >= 0 {
			return // not a value a header field can carry here
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(value) + `"`
		got := parseChallenges([]string{`Basic realm="x", Bearer realm=` + quoted + `, error=` + quoted})
		if len(got) != 2 || !got[1].is("Bearer") || got[1].params["error"] != value || got[1].params["realm"] != value {
			t.Fatalf("the error %q read back as %+v", value, got)
		}
	})
}
