package tokenserver

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The registered claims and the client's own claims come out as one JSON object.
func TestAccessClaimsEncodeAsEncodingJSONWould(t *testing.T) {
	for name, c := range map[string]accessClaims{
		"one audience and custom claims": {Issuer: "https://m2m.example.com", Subject: "m2m-a", Audience: "https://api", ClientID: "m2m-a", Scope: "read:x write:*", IssuedAt: 1, NotBef: 1, Expires: 3601, ID: "abc", extra: []byte(`{"team":"billing","n":1}`)},
		"several audiences, no scope":    {Issuer: "http://127.0.0.1:8080", Audience: []string{"a", "b"}, ID: "x"},
		"characters JSON must escape":    {Issuer: "https://e.com/\"q\"\\<&>", Subject: "é\n\t\u2028", Audience: []string{}, Scope: "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"},
		"empty custom claims":            {Issuer: "i", Audience: "a", extra: []byte(`{}`)},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := c.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var decoded map[string]any
			if err := json.Unmarshal(got, &decoded); err != nil {
				t.Fatalf("%s is not JSON: %v", got, err)
			}
			want := map[string]any{"iss": c.Issuer, "sub": c.Subject, "client_id": c.ClientID, "scope": c.Scope,
				"iat": float64(c.IssuedAt), "nbf": float64(c.NotBef), "exp": float64(c.Expires), "jti": c.ID}
			switch a := c.Audience.(type) {
			case string:
				want["aud"] = a
			case []string:
				list := []any{}
				for _, s := range a {
					list = append(list, s)
				}
				want["aud"] = list
			}
			if len(c.extra) > 2 {
				var extra map[string]any
				_ = json.Unmarshal(c.extra, &extra)
				for k, v := range extra {
					want[k] = v
				}
			}
			if !reflect.DeepEqual(decoded, want) {
				t.Fatalf("decoded %v\nwant    %v", decoded, want)
			}
		})
	}
}
