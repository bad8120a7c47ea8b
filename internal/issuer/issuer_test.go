package issuer

import "testing"

func TestParse(t *testing.T) {
	for name, tc := range map[string]struct {
		raw, want string
		fails     bool
	}{
		"an https URL is accepted":      {raw: "https://m2m.example.com", want: "https://m2m.example.com"},
		"a trailing slash is dropped":   {raw: "https://m2m.example.com/", want: "https://m2m.example.com"},
		"a path is kept":                {raw: "https://example.com/m2m", want: "https://example.com/m2m"},
		"http on loopback is accepted":  {raw: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		"an empty URL is refused":       {raw: "", fails: true},
		"a relative URL is refused":     {raw: "/oauth2", fails: true},
		"another scheme is refused":     {raw: "ftp://example.com", fails: true},
		"a query is refused":            {raw: "https://example.com?x=1", fails: true},
		"a fragment is refused":         {raw: "https://example.com#x", fails: true},
		"user information is refused":   {raw: "https://u:p@example.com", fails: true},
		"a URL with no host is refused": {raw: "https://", fails: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.raw)
			if (err != nil) != tc.fails {
				t.Fatalf("Parse(%q) error = %v, want failure %v", tc.raw, err, tc.fails)
			}
			if got != tc.want {
				t.Fatalf("Parse(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

func TestLoopbackAndTokenURL(t *testing.T) {
	if !Loopback("http://localhost:8080") || !Loopback("http://127.0.0.1") || !Loopback("http://[::1]:80") {
		t.Fatal("loopback hosts not recognised")
	}
	if Loopback("http://m2m.example.com") {
		t.Fatal("a remote host was taken for loopback")
	}
	if got := TokenURL("https://example.com/m2m/"); got != "https://example.com/m2m/oauth2/token" {
		t.Fatalf("TokenURL = %q", got)
	}
}
