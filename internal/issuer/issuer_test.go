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

func TestSameHost(t *testing.T) {
	for name, tc := range map[string]struct {
		url, host string
		same      bool
	}{
		"the URL's own host is the same":                         {url: "https://m2m.svc", host: "m2m.svc", same: true},
		"the default https port is the same as none":             {url: "https://m2m.svc", host: "m2m.svc:443", same: true},
		"the default http port is the same as none":              {url: "http://m2m.svc:80", host: "m2m.svc", same: true},
		"host names compare without case":                        {url: "https://M2M.svc", host: "m2m.SVC", same: true},
		"an explicit port must match":                            {url: "https://127.0.0.1:8443", host: "127.0.0.1:8443", same: true},
		"another port is another host":                           {url: "https://127.0.0.1:8443", host: "127.0.0.1:9443", same: false},
		"another name is another host":                           {url: "https://m2m.svc", host: "auth.example.com", same: false},
		"the https default port is not the http URL's default":   {url: "http://m2m.svc", host: "m2m.svc:443", same: false},
		"a name that only starts like the URL's is another host": {url: "https://m2m.svc", host: "m2m.svc.evil.example", same: false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := SameHost(tc.url, tc.host); got != tc.same {
				t.Fatalf("SameHost(%q, %q) = %v, want %v", tc.url, tc.host, got, tc.same)
			}
		})
	}
}
